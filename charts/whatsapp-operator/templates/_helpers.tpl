{{- define "wao.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "wao.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "wao.labels" -}}
app.kubernetes.io/name: {{ include "wao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "wao.selector" -}}
app.kubernetes.io/name: {{ include "wao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "wao.secretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "wao.fullname" .)) -}}
{{- end -}}
