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

{{- define "edge-gateway.authSecretName" -}}
{{- default (printf "%s-api-keys" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.auth.existingSecret }}
{{- end }}

{{- define "edge-gateway.modelsClaimName" -}}
{{- default (printf "%s-models" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.model.pvc.existingClaim }}
{{- end }}

{{- define "edge-gateway.dataClaimName" -}}
{{- default (printf "%s-data" (include "edge-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.persistence.existingClaim }}
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
{{- if and .Values.model.verify.enabled (not .Values.model.verify.command) }}
{{- fail "model.verify.enabled needs model.verify.command (the check to run on $MODEL_DIR)." }}
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
  "auth" (dict "keys" $keys) }}
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
