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

{{/*
Redis passwords are mounted from redis.auth.existingSecret when it is set, else from the chart's
Secret (which holds redis.auth.password and sentinelPassword). Empty: no Secret to mount.
*/}}
{{- define "lmtp-webhook.redisAuthSecret" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- if or .Values.redis.auth.existingSecretPasswordKey .Values.redis.auth.existingSecretSentinelPasswordKey }}
{{- .Values.redis.auth.existingSecret }}
{{- end }}
{{- else if or .Values.redis.auth.password .Values.redis.auth.sentinelPassword }}
{{- include "lmtp-webhook.fullname" . }}
{{- end }}
{{- end }}

{{/* Combinations values.schema.json cannot express; each message names the value to set. */}}
{{- define "lmtp-webhook.validateRedis" -}}
{{- if and .Values.existingSecret (not .Values.redis.auth.existingSecret) (or .Values.redis.auth.password .Values.redis.auth.sentinelPassword) }}
{{- fail "redis.auth.password: with existingSecret the chart renders no Secret; put the Redis passwords in a Secret and name it in redis.auth.existingSecret" }}
{{- end }}
{{- if and .Values.redis.auth.existingSecret .Values.redis.auth.sentinelPassword (not .Values.redis.auth.existingSecretSentinelPasswordKey) }}
{{- fail "redis.auth.existingSecretSentinelPasswordKey: name the key of the sentinel password in redis.auth.existingSecret" }}
{{- end }}
{{- if and .Values.redis.tls.existingSecret (not .Values.redis.tls.enabled) }}
{{- fail "redis.tls.enabled: set it to true to use redis.tls.existingSecret" }}
{{- end }}
{{- end }}
