{{/*
Names, labels and the values the templates derive (gateway config, paths, secrets).
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "edge-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else release name (when it already contains the chart name), else
release-chart. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "edge-gateway.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "edge-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "edge-gateway.labels" -}}
helm.sh/chart: {{ include "edge-gateway.chart" . }}
{{ include "edge-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edge-gateway
{{- end }}

{{/* Labels that select the gateway pods (never change them on upgrade). */}}
{{- define "edge-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edge-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edge-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest of the gateway image. */}}
{{- define "edge-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Image of the optional model-verification init container (defaults to the gateway's). */}}
{{- define "edge-gateway.verifyImage" -}}
{{- $v := .Values.model.verify.image }}
{{- if $v.repository }}
{{- printf "%s:%s" $v.repository (default "latest" $v.tag) }}
{{- else }}
{{- include "edge-gateway.image" . }}
{{- end }}
{{- end }}

{{- define "edge-gateway.configMapName" -}}
{{- printf "%s-config" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edge-gateway.policiesConfigMapName" -}}
{{- default (printf "%s-policies" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.policies.existingConfigMap }}
{{- end }}

{{- define "edge-gateway.promptsConfigMapName" -}}
{{- printf "%s-prompts" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edge-gateway.authSecretName" -}}
{{- default (printf "%s-api-keys" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.auth.existingSecret }}
{{- end }}

{{- define "edge-gateway.modelsClaimName" -}}
{{- default (printf "%s-models" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.model.pvc.existingClaim }}
{{- end }}

{{- define "edge-gateway.dataClaimName" -}}
{{- default (printf "%s-data" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.persistence.existingClaim }}
{{- end }}

{{/* Secret holding the audit log's HMAC key: audit.keySecret.name, else the API-key Secret. */}}
{{- define "edge-gateway.auditKeySecretName" -}}
{{- default (include "edge-gateway.authSecretName" .) .Values.audit.keySecret.name }}
{{- end }}

{{/* Environment variables the chart fills from Secrets, named in gateway.yaml. */}}
{{- define "edge-gateway.trustedKeysEnv" -}}EDGE_GATEWAY_TRUSTED_KEYS{{- end }}
{{- define "edge-gateway.auditKeyEnv" -}}EDGE_GATEWAY_AUDIT_KEY{{- end }}
{{- define "edge-gateway.auditSinkTokenEnv" -}}EDGE_GATEWAY_AUDIT_SINK_TOKEN{{- end }}

{{/*
Pods of a Deployment on a hostPath share the node's directory (several replicas, or the new
pod beside the old one during a rolling update), but an audit directory has one writer: each
of those pods writes audit/<pod name>/.
*/}}
{{- define "edge-gateway.auditDirPerPod" -}}
{{- if and .Values.audit.enabled (eq .Values.kind "Deployment") (eq .Values.persistence.type "hostPath") }}true{{ end }}
{{- end }}

{{/* Environment variable holding an API key, from the key's name: EDGE_GATEWAY_KEY_<NAME>. */}}
{{- define "edge-gateway.keyEnv" -}}
{{- printf "EDGE_GATEWAY_KEY_%s" (regexReplaceAll "[^A-Za-z0-9]" . "_" | upper) }}
{{- end }}

{{/* Directory of the model package inside the container. */}}
{{- define "edge-gateway.modelPath" -}}
{{- if eq .Values.model.source "image" }}
{{- printf "/opt/edge-gateway/models/%s" .Values.model.name }}
{{- else }}
{{- printf "/models/%s" .Values.model.name }}
{{- end }}
{{- end }}

{{/*
ONNX Runtime intra-op threads: config.runtime.intra_threads when set, else the CPU limit (or
request) rounded up. ORT's own default is one thread per host CPU, which oversubscribes a pod
whose CPU is limited by its cgroup.
*/}}
{{- define "edge-gateway.intraThreads" -}}
{{- $cpu := "" }}
{{- with .Values.resources }}
{{- $cpu = (dig "limits" "cpu" "" .) | default (dig "requests" "cpu" "" .) | toString }}
{{- end }}
{{- if not $cpu }}
{{- 0 }}
{{- else if hasSuffix "m" $cpu }}
{{- $milli := trimSuffix "m" $cpu | int }}
{{- max 1 (div (add $milli 999) 1000) }}
{{- else }}
{{- max 1 ($cpu | float64 | ceil | int) }}
{{- end }}
{{- end }}

{{/*
Checks of combinations values.schema.json cannot express; fails the render with the fix.
*/}}
{{- define "edge-gateway.validate" -}}
{{- $multi := or (eq .Values.kind "DaemonSet") .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- if and (eq .Values.persistence.type "pvc") $multi }}
{{- fail "persistence.type=pvc keeps the review database on one claim, which one pod at a time may use (SQLite must not be shared across nodes). With kind DaemonSet, replicaCount > 1 or autoscaling, use persistence.type=hostPath (a database per node) or emptyDir." }}
{{- end }}
{{- if and (eq .Values.kind "DaemonSet") .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs kind Deployment: a DaemonSet runs one pod per node." }}
{{- end }}
{{- if and .Values.model.verify.enabled (eq .Values.model.verify.mode "command") (not .Values.model.verify.command) }}
{{- fail "model.verify.enabled needs model.verify.command (the check to run on $MODEL_DIR)." }}
{{- end }}
{{- if and (or .Values.governance.requireSigned (and .Values.model.verify.enabled (eq .Values.model.verify.mode "signature"))) (not .Values.governance.trustedKeysSecret.name) }}
{{- fail "governance.requireSigned and model.verify.mode=signature need governance.trustedKeysSecret.name (the Secret holding the trusted public keys)." }}
{{- end }}
{{- $prompts := include "edge-gateway.promptFiles" . | fromJson }}
{{- $promptKeys := dict }}
{{- range $path, $_ := $prompts }}
{{- $key := include "edge-gateway.promptKey" $path }}
{{- if hasKey $promptKeys $key }}
{{- fail (printf "prompts.files: %q and %q both map to ConfigMap key %q; rename one." (get $promptKeys $key) $path $key) }}
{{- end }}
{{- $_ := set $promptKeys $key $path }}
{{- end }}
{{- range $name, $version := .Values.prompts.defaults }}
{{- if not (hasKey $prompts (printf "%s/%s.yaml" $name $version)) }}
{{- fail (printf "prompts.defaults.%s: no prompt file %s/%s.yaml (prompts.files, else the chart's files/prompts/)." $name $name $version) }}
{{- end }}
{{- end }}
{{- if and (not .Values.policies.existingConfigMap) .Values.policies.files (not (hasKey .Values.policies.files .Values.policies.active)) }}
{{- fail (printf "policies.active (%s) is not one of policies.files." .Values.policies.active) }}
{{- end }}
{{- if and (not .Values.policies.existingConfigMap) (not .Values.policies.files) (not (.Files.Get (printf "files/policies/%s" .Values.policies.active))) }}
{{- fail (printf "policies.active (%s) is not a file in the chart's files/policies/; set policies.files." .Values.policies.active) }}
{{- end }}
{{- $envs := dict }}
{{- $secretKeys := dict }}
{{- range .Values.auth.keys }}
{{- $env := include "edge-gateway.keyEnv" .name }}
{{- if hasKey $envs $env }}
{{- fail (printf "auth.keys: names %q and %q both map to %s; rename one." (get $envs $env) .name $env) }}
{{- end }}
{{- $_ := set $envs $env .name }}
{{- if hasKey $secretKeys .secretKey }}
{{- fail (printf "auth.keys: %q and %q share secretKey %q; every key needs its own secret." (get $secretKeys .secretKey) .name .secretKey) }}
{{- end }}
{{- $_ := set $secretKeys .secretKey .name }}
{{- end }}
{{- if and .Values.audit.enabled (not .Values.audit.keySecret.name) (hasKey $secretKeys .Values.audit.keySecret.key) }}
{{- fail (printf "auth.keys: %q uses secretKey %q, which holds the audit key (audit.keySecret.key); every key needs its own secret." (get $secretKeys .Values.audit.keySecret.key) .Values.audit.keySecret.key) }}
{{- end }}
{{- /* Secrets that exist already (helm install/upgrade; `helm template` cannot look) must hold
the keys the pod reads: a missing key would stop the new pods at CreateContainerConfigError. */}}
{{- $refs := list }}
{{- if .Values.audit.enabled }}
{{- if or .Values.audit.keySecret.name .Values.auth.existingSecret }}
{{- $refs = append $refs (list (include "edge-gateway.auditKeySecretName" .) .Values.audit.keySecret.key "audit.keySecret") }}
{{- end }}
{{- if and .Values.audit.sink.url .Values.audit.sink.tokenSecret.name }}
{{- $refs = append $refs (list .Values.audit.sink.tokenSecret.name .Values.audit.sink.tokenSecret.key "audit.sink.tokenSecret") }}
{{- end }}
{{- end }}
{{- with .Values.governance.trustedKeysSecret.name }}
{{- $refs = append $refs (list . $.Values.governance.trustedKeysSecret.key "governance.trustedKeysSecret") }}
{{- end }}
{{- range $refs }}
{{- $found := lookup "v1" "Secret" $.Release.Namespace (index . 0) }}
{{- if and $found (not (hasKey ($found.data | default dict) (index . 1))) }}
{{- fail (printf "%s: Secret %s has no key %q; add it (kubectl -n %s patch secret %s ...) or name another." (index . 2) (index . 0) (index . 1) $.Release.Namespace (index . 0)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* gateway.yaml: values.config with the keys the chart manages set on top. */}}
{{- define "edge-gateway.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $keys := list }}
{{- range .Values.auth.keys }}
{{- $key := dict "name" .name "key_env" (include "edge-gateway.keyEnv" .name) "scopes" .scopes }}
{{- if .requestsPerMinute }}
{{- $_ := set $key "requests_per_minute" (int .requestsPerMinute) }}
{{- end }}
{{- $keys = append $keys $key }}
{{- end }}
{{- $managed := dict
  "server" (dict "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)))
  "model" (dict "path" (include "edge-gateway.modelPath" .))
  "embeddings" (dict "path" "/opt/edge-gateway/models/all-minilm-l6-v2-int8")
  "routing" (dict
    "policy" (printf "/etc/edge-gateway/policies/%s" .Values.policies.active)
    "reload_interval_ms" (int .Values.policies.reloadIntervalMs)
    "exemplars" "/etc/edge-gateway/exemplars"
    "exemplar_cache_dir" "/var/cache/edge-gateway/exemplars")
  "review" (dict "db_path" "/var/lib/edge-gateway/reviews.db")
  "cache" (dict "optimized_graph_dir" (ternary "/var/cache/edge-gateway/ort-optimized" "" .Values.graphCache.enabled))
  "auth" (dict "keys" $keys)
  "prompts" (dict "dir" "/etc/edge-gateway/prompts" "defaults" (.Values.prompts.defaults | default dict))
  "governance" (dict
    "require_signed" .Values.governance.requireSigned
    "model_state_path" "/var/lib/edge-gateway/model-state.json")
  "audit" (dict "enabled" .Values.audit.enabled) }}
{{- if .Values.governance.trustedKeysSecret.name }}
{{- $_ := set $managed.governance "trusted_keys_env" (include "edge-gateway.trustedKeysEnv" .) }}
{{- end }}
{{- if .Values.audit.enabled }}
{{- $_ := set $managed.audit "dir" "/var/lib/edge-gateway/audit" }}
{{- $_ := set $managed.audit "key_env" (include "edge-gateway.auditKeyEnv" .) }}
{{- with .Values.audit.sink.url }}
{{- $sink := dict "url" . }}
{{- if $.Values.audit.sink.tokenSecret.name }}
{{- $_ := set $sink "token_env" (include "edge-gateway.auditSinkTokenEnv" $) }}
{{- end }}
{{- $_ := set $managed.audit "sink" $sink }}
{{- end }}
{{- end }}
{{- $runtime := get $cfg "runtime" | default dict }}
{{- if not (hasKey $runtime "intra_threads") }}
{{- $_ := set $managed "runtime" (dict "intra_threads" (include "edge-gateway.intraThreads" . | int)) }}
{{- end }}
{{- $cfg = mustMergeOverwrite $cfg $managed }}
{{- toYaml $cfg }}
{{- end }}

{{/* Policy files of the chart-made ConfigMap: policies.files, else the chart's files/policies/. */}}
{{- define "edge-gateway.policyFiles" -}}
{{- if .Values.policies.files }}
{{- range $name, $text := .Values.policies.files }}
{{ $name }}: |
{{- $text | nindent 2 }}
{{- end }}
{{- else }}
{{- (.Files.Glob "files/policies/*.yaml").AsConfig }}
{{- end }}
{{- end }}

{{/*
Prompt files, "<name>/<version>.yaml" -> text, as JSON (toYaml would drop the last file's final
newline): prompts.files, else the chart's files/prompts/ (the repository's prompts/, through a
symlink that `helm package` resolves).
*/}}
{{- define "edge-gateway.promptFiles" -}}
{{- $files := dict }}
{{- if .Values.prompts.files }}
{{- $files = .Values.prompts.files }}
{{- else }}
{{- range $path, $_ := .Files.Glob "files/prompts/*/*.yaml" }}
{{- $_ := set $files (trimPrefix "files/prompts/" $path) ($.Files.Get $path) }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/*
ConfigMap key of a prompt file: keys cannot hold "/", so "<name>/<version>.yaml" becomes
"<name>_<version>.yaml" (other characters keys refuse as "-"); the volume's items map it back.
*/}}
{{- define "edge-gateway.promptKey" -}}
{{- regexReplaceAll "[^-._a-zA-Z0-9]" (replace "/" "_" .) "-" }}
{{- end }}
