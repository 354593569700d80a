{{/* Chart name. */}}
{{- define "oro.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "oro.fullname" -}}
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

{{- define "oro.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oro.labels" -}}
helm.sh/chart: {{ include "oro.chart" . }}
{{ include "oro.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: oidc-refresh-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "oro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oro.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: explicitly, or because there is more than one replica. */}}
{{- define "oro.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "oro.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs on the namespaces it watches: exactly the verbs it uses.
*/}}
{{- define "oro.rules" -}}
# The policies, and their status (server-side apply of conditions).
- apiGroups: ["oidcrefresh.dev"]
  resources: ["oidcrefreshpolicies"]
  verbs: ["list", "watch"]
- apiGroups: ["oidcrefresh.dev"]
  resources: ["oidcrefreshpolicies/status"]
  verbs: ["patch"]
# The Coder Deployments: watched, and server-side apply of the two env entries.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
# Admin credentials named by policies (metadata watch, get of the named Secret); also the key
# names of Secrets the Coder container loads with envFrom, as for ConfigMaps below.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# ConfigMaps the Coder container loads with envFrom: their key names are checked while
# CODER_OIDC_SCOPES or CODER_OIDC_AUTH_URL_PARAMS is not in its env (an env entry would override them).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Events about policies.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# Other tools' resources for the same identity-provider objects, read before writing (only while
# their CRD is served): the Keycloak operator's KeycloakOIDCClients and Azure Service Operator's
# Entra Applications.
- apiGroups: ["k8s.keycloak.org"]
  resources: ["keycloakoidcclients"]
  verbs: ["list"]
- apiGroups: ["entra.azure.com"]
  resources: ["applications"]
  verbs: ["list"]
{{- end }}
