{{/* Chart name, overridable. */}}
{{- define "forecast-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name (forecast-operator). */}}
{{- define "forecast-operator.fullname" -}}
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

{{- define "forecast-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "forecast-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forecast-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "forecast-operator.labels" -}}
{{ include "forecast-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: retail-forecast
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "forecast-operator.chart" . }}
{{- end }}

{{- define "forecast-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "forecast-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "forecast-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Workload identity is on when asked for, or when a client id is configured anyway. */}}
{{- define "forecast-operator.workloadIdentity" -}}
{{- if or .Values.workloadIdentity.enabled .Values.workloadIdentity.clientId (hasKey .Values.serviceAccount.annotations "azure.workload.identity/client-id") }}true{{ end }}
{{- end }}

{{/*
RBAC rules on namespaced resources: exactly the API calls of operator/src (reconcile.py, kube.py,
handlers.py) and of kopf (events, namespaced peering). Shared by the ClusterRole (all namespaces)
and the per-namespace Roles. tests/operator/test_chart_rbac.py runs the operator under them on a
real API server: every rule must be used, and nothing used may be missing.
*/}}
{{- define "forecast-operator.namespacedRules" -}}
# ForecastModels: kopf lists and watches them; the reconciler reads one (get).
- apiGroups: [retailforecast.io]
  resources: [forecastmodels]
  verbs: [get, list, watch]
# The reconciler writes only the status subresource (merge patch guarded by resourceVersion).
- apiGroups: [retailforecast.io]
  resources: [forecastmodels/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion: true; clusters running the
# OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers.
- apiGroups: [retailforecast.io]
  resources: [forecastmodels/finalizers]
  verbs: [update]
# Children are written by server-side apply: a patch, which the API server also authorizes as create
# when the child does not exist yet. Blue/green Deployments: kopf watches them (labelled managed-by),
# the reconciler lists them by label; never deleted (the retired colour stays at 0 for a rollback).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# The Services and the HPA are read before a write; the preview Service is deleted when a rollout
# ends, the HPA when autoscaling is turned off.
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
# The batch CronJob (spec.batch): read before a write, deleted when spec.batch is removed.
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, create, patch, delete]
# The Jobs it makes: kopf watches them (labelled managed-by), the reconciler lists them by label for
# status.batch.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch]
# Pods, listed by label and only to explain: a finished batch run's (once per run: their termination
# message says what it wrote, or why it failed), and a colour's when a preview is rolled back or the
# active colour has no available replica (what its containers said goes into the Event and condition).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# kopf.event() posts core v1 Events in the ForecastModel's namespace.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
