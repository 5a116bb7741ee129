{{/* Chart name. */}}
{{- define "hodhod.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name; each service appends "-<service>". */}}
{{- define "hodhod.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hodhod.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels. */}}
{{- define "hodhod.labels" -}}
helm.sh/chart: {{ include "hodhod.chart" . }}
app.kubernetes.io/name: {{ include "hodhod.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hodhod
{{- end -}}

{{/* Selector labels without the component. */}}
{{- define "hodhod.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hodhod.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hodhod.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "hodhod.configName" -}}
{{- printf "%s-env" (include "hodhod.fullname" .) -}}
{{- end -}}

{{/* Plain (non-secret) environment shared by every container, as YAML key: "value". */}}
{{- define "hodhod.config" -}}
HODHOD_ENVIRONMENT: "production"
HODHOD_LOG_LEVEL: {{ .Values.logLevel | quote }}
HODHOD_HTTP_HOST: "0.0.0.0"
HODHOD_HTTP_PORT: {{ .Values.containerPort | quote }}
HODHOD_VAR_DIR: "/var/lib/hodhod"
HODHOD_KAFKA_BOOTSTRAP: {{ .Values.kafka.bootstrap | quote }}
HODHOD_KAFKA_PARTITIONS: {{ .Values.kafka.partitions | quote }}
HODHOD_KAFKA_REPLICATION: {{ .Values.kafka.replication | quote }}
HODHOD_KAFKA_FETCH_MAX_WAIT_MS: {{ .Values.kafka.fetchMaxWaitMs | quote }}
HODHOD_CLICKHOUSE_DATABASE: {{ .Values.clickhouse.database | quote }}
{{- if not .Values.clickhouse.existingSecret }}
HODHOD_CLICKHOUSE_URL: {{ .Values.clickhouse.url | quote }}
{{- end }}
{{- if .Values.publicUrl }}
HODHOD_PUBLIC_URL: {{ .Values.publicUrl | quote }}
{{- end }}
{{- range $k, $v := .Values.extraEnv }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* Environment entries read from Secrets (database URL, optional ClickHouse URL). */}}
{{- define "hodhod.secretEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
{{- if .Values.clickhouse.existingSecret }}
- name: HODHOD_CLICKHOUSE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.clickhouse.existingSecret }}
      key: {{ .Values.clickhouse.key }}
{{- end }}
{{- end -}}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "hodhod.volumes" -}}
- name: var
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "hodhod.volumeMounts" -}}
- name: var
  mountPath: /var/lib/hodhod
- name: tmp
  mountPath: /tmp
{{- end -}}
