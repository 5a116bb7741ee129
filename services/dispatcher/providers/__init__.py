"""Provider adapters of the dispatcher, and the registry that picks one per address.

The core codes against ``base`` (Message, Address, Outcome, Provider, BulkProvider) and
``ProviderRegistry``; ``addresses`` turns a profile's tokens and contacts into
Addresses. Each adapter module documents its wire protocol and error mapping.

``base`` and ``addresses`` are pure; the registry (and with it the I/O libraries) is
imported only when ``ProviderRegistry`` is first asked for.
"""

from typing import TYPE_CHECKING, Any

from services.dispatcher.providers.base import (
    REASONS,
    Address,
    BulkProvider,
    Message,
    Outcome,
    Provider,
)

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name == "ProviderRegistry":
        from services.dispatcher.providers.registry import ProviderRegistry

        return ProviderRegistry
    raise AttributeError(name)
