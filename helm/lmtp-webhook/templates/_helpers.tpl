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

{{/*
Seconds Kubernetes waits after SIGTERM before SIGKILL: the shutdown delay (not ready, still
serving); the LMTP drain, where a session may still be waiting out its reply timeout (cut at the
shutdown timeout); the workers' drain (shutdown timeout again); a 5 s margin. The process itself
gives up at the shutdown delay plus twice the shutdown timeout plus 5 s, so this never kills it
first.
*/}}
{{- define "lmtp-webhook.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $reply := int .Values.config.delivery.replyTimeoutSeconds }}
{{- $shutdown := int .Values.config.shutdownTimeoutSeconds }}
{{- add (int .Values.config.shutdownDelaySeconds) (max $reply $shutdown) $shutdown 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
