{{/*
Chart name, truncated to the 63 characters Kubernetes names allow.
*/}}
{{- define "okms-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, prefixed to the chart name unless it already contains it.
*/}}
{{- define "okms-operator.fullname" -}}
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

{{- define "okms-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels.
*/}}
{{- define "okms-operator.labels" -}}
helm.sh/chart: {{ include "okms-operator.chart" . }}
{{ include "okms-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: okms-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "okms-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "okms-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "okms-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "okms-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "okms-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Leader election: several replicas without it would all reconcile and write.
*/}}
{{- define "okms-operator.leaderElection" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.operator.leaderElection) }}
{{- fail "replicaCount > 1 requires operator.leaderElection=true" }}
{{- end }}
{{- .Values.operator.leaderElection }}
{{- end }}
