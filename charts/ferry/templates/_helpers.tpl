{{/* Chart name. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified name, kept short enough for the suffixes added below. */}}
{{- define "ferry.fullname" -}}
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

{{- define "ferry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels common to every object of the release. */}}
{{- define "ferry.labels" -}}
helm.sh/chart: {{ include "ferry.chart" . }}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferry
{{- end -}}

{{/* Selects the operator pod only: worker pods carry the same name and instance, but their role as the component
(monitor, copy, ...) and managed-by=ferry. */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "ferry.operatorServiceAccountName" -}}
{{- default (printf "%s-operator" (include "ferry.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{/* One name in every worker namespace: the operator sets it on every worker pod. */}}
{{- define "ferry.workerServiceAccountName" -}}
{{- default (printf "%s-worker" (include "ferry.fullname" .)) .Values.workerServiceAccount.name -}}
{{- end -}}

{{- define "ferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ferry.workerImage" -}}
{{- default (include "ferry.image" .) .Values.workerImage -}}
{{- end -}}

{{/* Namespaces that get the worker service account, as a JSON list. */}}
{{- define "ferry.workerNamespaces" -}}
{{- $namespaces := .Values.workerNamespaces | default .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- $namespaces | uniq | toJson -}}
{{- end -}}

{{/*
What the operator may do in a watched namespace: watch Ferry's resources, patch their finalizers and
apply their status, run and remove worker pods, and post Events. No access to Secrets: worker pods
receive credentials as Secret references that the kubelet resolves.
*/}}
{{- define "ferry.operatorNamespacedRules" -}}
- apiGroups: ["ferry.dev"]
  resources: ["databaseaccounts", "containercopyjobs", "inaccountrestores", "blobcopies"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["ferry.dev"]
  resources: ["databaseaccounts/status", "containercopyjobs/status", "inaccountrestores/status", "blobcopies/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The worker service account and its RoleBinding, made in a namespace on first use; the binding may name
# only the worker ClusterRole (bind), whose few rights the operator need not hold itself.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  verbs: ["bind"]
  resourceNames: [{{ printf "%s-worker" (include "ferry.fullname" .) | quote }}]
{{- end -}}

{{/* Cluster-scoped reads kopf needs: namespaces to follow, CRDs to discover its resources. */}}
{{- define "ferry.operatorClusterRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}
