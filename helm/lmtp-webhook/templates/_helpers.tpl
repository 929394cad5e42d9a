{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "lmtp-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it already holds it. */}}
{{- define "lmtp-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lmtp-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lmtp-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lmtp-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lmtp-webhook.labels" -}}
helm.sh/chart: {{ include "lmtp-webhook.chart" . }}
{{ include "lmtp-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.role }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lmtp-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lmtp-webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding redis-url, admin-tokens and routes.yaml. */}}
{{- define "lmtp-webhook.secretName" -}}
{{- default (include "lmtp-webhook.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: the preStop sleep, one reply timeout, the drain, a margin. */}}
{{- define "lmtp-webhook.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add .Values.preStopSleepSeconds .Values.config.delivery.replyTimeoutSeconds .Values.config.shutdownTimeoutSeconds 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
