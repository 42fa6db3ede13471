{{/* Chart name, overridable. */}}
{{- define "reranker-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name used for every object of this release. */}}
{{- define "reranker-operator.fullname" -}}
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

{{/* Labels on every object; the selector labels are the stable subset. */}}
{{- define "reranker-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "reranker-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reranker-operator
{{- end }}

{{- define "reranker-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reranker-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "reranker-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reranker-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag}; an empty tag is the chart's appVersion, a numeric tag (--set) is printed as written. */}}
{{- define "reranker-operator.imageRef" -}}
{{- $tag := toString (.image.tag | default "") }}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion $tag) }}
{{- end }}

{{- define "reranker-operator.image" -}}
{{- include "reranker-operator.imageRef" (dict "image" .Values.image "chart" .Chart) }}
{{- end }}

{{/*
The rules the operator needs in every namespace it watches: exactly the (verb, resource) pairs it calls.
Kept in one place so the ClusterRole (all namespaces) and the per-namespace Roles cannot drift apart.
*/}}
{{- define "reranker-operator.namespacedRules" -}}
# kopf lists and watches RerankerDeployments and patches them (progress annotations) and their status.
- apiGroups: ["reranker.dev"]
  resources: ["rerankerdeployments"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["reranker.dev"]
  resources: ["rerankerdeployments/status"]
  verbs: ["patch"]
# Children: listed and watched by the label managed-by=reranker-operator (the operator's caches),
# server-side applied (patch; create when the object is new), pruned (delete).
- apiGroups: [""]
  resources: ["configmaps", "services", "persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Scale to zero (autoscaling.minReplicas 0): the router's ServiceAccount, Role and RoleBinding are children too.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The router's Role grants get/update/patch on deployments/scale, and Kubernetes lets a subject create a Role or
# RoleBinding only with the permissions it holds itself (RBAC privilege-escalation prevention:
# https://kubernetes.io/docs/reference/access-authn-authz/rbac/#privilege-escalation-prevention-and-bootstrapping).
# The operator also patches it itself to bring a Deployment at 0 back when minReplicas rises from 0.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "update", "patch"]
# Read-only, cached from watches: rollout progress and pod failure reasons for status conditions.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# kopf.info/kopf.warn post core/v1 Events on the RerankerDeployment; Warning Events are read (list) only to
# explain a wait in status (a Pending cache PVC, a pod whose Secret volume cannot be mounted).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Cluster-scoped objects kopf observes: CRDs (to notice when ours is installed) and, in namespaced mode, namespaces. */}}
{{- define "reranker-operator.clusterObservationRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
