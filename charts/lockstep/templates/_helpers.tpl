{{/* Name of the chart, or nameOverride. */}}
{{- define "lockstep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or fullnameOverride; the release name alone when it contains the chart name. */}}
{{- define "lockstep.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "lockstep.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "lockstep.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "lockstep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockstep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lockstep.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lockstep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lockstep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lockstep.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Rules on namespaced objects, the same in a ClusterRole and in a namespace-scoped Role. */}}
{{- define "lockstep.namespacedRules" -}}
# Watch the CRDs; write only their status (server-side apply is a patch).
- apiGroups: [lockstep.dev]
  resources: [externalsecrets, secretstores]
  verbs: [get, list, watch]
- apiGroups: [lockstep.dev]
  resources: [externalsecrets/status, secretstores/status]
  verbs: [patch]
# Target Secrets are server-side applied (patch; create when the apply creates one), deleted only for
# deletionPolicy Delete; get reads credential Secrets, existing targets and templateFrom Secrets;
# list/watch follow the Secrets carrying the managed-by label, and (metadata only) the edits of
# templateFrom Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# templateFrom ConfigMaps: read when rendering, watched (metadata only) so an edit renders again.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
# The event Recorder writes events.k8s.io/v1 Events (create, then patch for a series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# rolloutRestartTargets: a server-side apply of one pod-template annotation.
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, patch]
{{- if .Values.jwt.enabled }}
# auth.jwt: a TokenRequest for the ServiceAccount a store names, and a read of that ServiceAccount
# for its eks.amazonaws.com/role-arn annotation.
- apiGroups: [""]
  resources: [serviceaccounts/token]
  verbs: [create]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get]
{{- end }}
{{- end }}
