{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "sipfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the operator's objects: <release>-sipfleet, or <release> when it already says sipfleet. */}}
{{- define "sipfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sipfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of this chart. */}}
{{- define "sipfleet.labels" -}}
helm.sh/chart: {{ include "sipfleet.chart" . }}
{{ include "sipfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sipfleet
{{- end -}}

{{/* Labels that select the operator pod (immutable once installed). */}}
{{- define "sipfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sipfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sipfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sipfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: repository@digest, else repository:tag (tag defaults to the appVersion). */}}
{{- define "sipfleet.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The rules the operator needs in every namespace it serves (a ClusterRole cluster-wide, a Role per namespace
otherwise). Why each rule is there:

- sipaccounts: kopf lists/watches them and patches the main resource (kopf annotations; removing the finalizer
  versions up to 0.1 put there);
  sipaccounts/status: the operator writes conditions/observedGeneration/ladder with merge patches.
- configmaps, serviceaccounts, apps/deployments: the per-agent objects (sipfleet-agent-<id>) it creates, keeps in
  step with the placement (server-side apply and merge patches: `patch`; never PUT, so no `update`) and deletes
  when an agent empties out.
- roles, rolebindings: the per-agent Role + RoleBinding. No `escalate` or `bind`: Kubernetes lets a subject
  create a Role (and bind it) when the subject already holds every permission the Role grants in that
  namespace. The agent Role grants sipaccounts get/list/watch, sipaccounts/status get/patch, secrets get,
  configmaps get/list/watch and events create, and every one of those is below (same namespace or wider), so
  the operator can create agent RBAC and nothing beyond what it already has.
- secrets get/list/watch: the operator reads the referenced Secret's resourceVersion (secretVersion in the
  assignment) so a credentials change reaches the agent; it never reads the password into status or logs.
- pods get/list/watch: agent pod readiness/restarts (AgentReady condition) and the ladder's pod restart;
  pods delete: the ladder's "restart-pod" step.
- events create/patch: kopf's and the operator's events on SipAccounts (patch: the apiserver aggregates
  repeats into an existing event). The agent Role needs create.
*/}}
{{- define "sipfleet.namespacedRules" -}}
- apiGroups: ["sipfleet.io"]
  resources: ["sipaccounts"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["sipfleet.io"]
  resources: ["sipaccounts/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# kopf peering of a namespaced operator (replicaCount > 1): a KopfPeering per watched namespace, created by the
# operator at start when missing
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end -}}

{{/* NetworkPolicy egress rules to the API server's endpoints (networkPolicy.apiServer). */}}
{{- define "sipfleet.apiServerEgress" -}}
{{- range .Values.networkPolicy.apiServer }}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}
{{- end -}}
