"""Provider adapters of the dispatcher, and the registry that picks one per address.

The core codes against ``base`` (Message, Address, Outcome, Provider, BulkProvider) and
``ProviderRegistry``; ``addresses`` turns a profile's tokens and contacts into
Addresses. Each adapter module documents its wire protocol and error mapping.
"""

from services.dispatcher.providers.base import (
    REASONS,
    Address,
    BulkProvider,
    Message,
    Outcome,
    Provider,
)
from services.dispatcher.providers.registry import ProviderRegistry

__all__ = [
    "REASONS",
    "Address",
    "BulkProvider",
    "Message",
    "Outcome",
    "Provider",
    "ProviderRegistry",
]
