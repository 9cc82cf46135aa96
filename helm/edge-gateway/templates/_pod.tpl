{{/*
Pod template shared by the Deployment and the DaemonSet.
*/}}
{{- define "edge-gateway.podTemplate" -}}
metadata:
  labels:
    {{- include "edge-gateway.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Config, prompt (no watcher) and chart-made key changes roll the pods. Policies reload
    # live unless policies.rollOnChange.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/prompts: {{ include (print $.Template.BasePath "/configmap-prompts.yaml") . | sha256sum }}
    {{- if not .Values.auth.existingSecret }}
    checksum/api-keys: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- if and .Values.policies.rollOnChange (not .Values.policies.existingConfigMap) }}
    checksum/policies: {{ include (print $.Template.BasePath "/configmap-policies.yaml") . | sha256sum }}
    {{- end }}
    {{- if .Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.containerPort | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "edge-gateway.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- $initContainers := or (and (eq .Values.persistence.type "hostPath") .Values.persistence.hostPath.fixPermissions) .Values.model.verify.enabled .Values.extraInitContainers }}
  {{- if $initContainers }}
  initContainers:
    {{- if and (eq .Values.persistence.type "hostPath") .Values.persistence.hostPath.fixPermissions }}
    # A new hostPath directory belongs to root: hand it to the gateway's user, nothing else.
    - name: data-permissions
      image: {{ include "edge-gateway.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - /bin/bash
        - -c
        - chown {{ .Values.podSecurityContext.runAsUser | default 10001 }}:{{ .Values.podSecurityContext.runAsGroup | default 10001 }} /var/lib/edge-gateway && chmod 0750 /var/lib/edge-gateway
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
          add: ["CHOWN", "FOWNER"]
      resources:
        limits:
          cpu: 100m
          memory: 64Mi
      volumeMounts:
        - name: data
          mountPath: /var/lib/edge-gateway
    {{- end }}
    {{- if .Values.model.verify.enabled }}
    {{- if eq .Values.model.verify.mode "signature" }}
    # Checks the package's signature (by a key of governance.trustedKeysSecret) and every
    # file's digest before the gateway loads it; a failure names the tampered file.
    - name: verify-model
      image: {{ include "edge-gateway.verifyImage" . }}
      imagePullPolicy: {{ .Values.model.verify.image.pullPolicy }}
      command:
        - /usr/local/bin/edge-gateway
        - model
        - verify
        - --pubkey-env
        - {{ include "edge-gateway.trustedKeysEnv" . }}
        - $(MODEL_DIR)
    {{- else }}
    # Checks the model package before the gateway loads it (command from model.verify).
    - name: verify-model
      image: {{ include "edge-gateway.verifyImage" . }}
      imagePullPolicy: {{ .Values.model.verify.image.pullPolicy }}
      command:
        {{- toYaml .Values.model.verify.command | nindent 8 }}
      {{- with .Values.model.verify.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
      env:
        - name: MODEL_DIR
          value: {{ include "edge-gateway.modelPath" . | quote }}
        {{- with .Values.governance.trustedKeysSecret.name }}
        - name: {{ include "edge-gateway.trustedKeysEnv" $ }}
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $.Values.governance.trustedKeysSecret.key }}
        {{- end }}
        {{- with .Values.model.verify.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      {{- with .Values.model.verify.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if ne .Values.model.source "image" }}
      volumeMounts:
        - name: models
          mountPath: /models
          readOnly: true
      {{- end }}
    {{- end }}
    {{- with .Values.extraInitContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  containers:
    - name: gateway
      image: {{ include "edge-gateway.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve", "--config", "/etc/edge-gateway/gateway.yaml"]
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      env:
        - name: EDGE_GATEWAY_HEALTH_PORT
          value: {{ .Values.containerPort | quote }}
        {{- range .Values.auth.keys }}
        - name: {{ include "edge-gateway.keyEnv" .name }}
          valueFrom:
            secretKeyRef:
              name: {{ include "edge-gateway.authSecretName" $ }}
              key: {{ .secretKey }}
        {{- end }}
        {{- range .Values.upstreamApiKeys }}
        - name: {{ .env }}
          valueFrom:
            secretKeyRef:
              name: {{ .secretName }}
              key: {{ .secretKey }}
        {{- end }}
        {{- with .Values.governance.trustedKeysSecret.name }}
        # Public keys trusted for signed model packages (governance.trusted_keys_env).
        - name: {{ include "edge-gateway.trustedKeysEnv" $ }}
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $.Values.governance.trustedKeysSecret.key }}
        {{- end }}
        {{- if .Values.audit.enabled }}
        # HMAC key of the audit log's hash chain (audit.key_env).
        - name: {{ include "edge-gateway.auditKeyEnv" . }}
          valueFrom:
            secretKeyRef:
              name: {{ include "edge-gateway.auditKeySecretName" . }}
              key: {{ .Values.audit.keySecret.key }}
        {{- if and .Values.audit.sink.url .Values.audit.sink.tokenSecret.name }}
        - name: {{ include "edge-gateway.auditSinkTokenEnv" . }}
          valueFrom:
            secretKeyRef:
              name: {{ .Values.audit.sink.tokenSecret.name }}
              key: {{ .Values.audit.sink.tokenSecret.key }}
        {{- end }}
        {{- if include "edge-gateway.auditDirPerPod" . }}
        # Several pods of this Deployment may share the node's hostPath directory; an audit
        # directory takes one writer, so each pod writes its own.
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: EDGE_GATEWAY__AUDIT__DIR
          value: /var/lib/edge-gateway/audit/$(POD_NAME)
        {{- end }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: /etc/edge-gateway/gateway.yaml
          subPath: gateway.yaml
          readOnly: true
        # A directory mount (not subPath), so ConfigMap updates reach the pod for hot reload.
        - name: policies
          mountPath: /etc/edge-gateway/policies
          readOnly: true
        - name: prompts
          mountPath: /etc/edge-gateway/prompts
          readOnly: true
        # The review database, model-state.json and the audit log (audit/).
        - name: data
          mountPath: /var/lib/edge-gateway
        {{- if .Values.graphCache.enabled }}
        - name: graph-cache
          mountPath: /var/cache/edge-gateway
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if ne .Values.model.source "image" }}
        - name: models
          mountPath: /models
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "edge-gateway.configMapName" . }}
    - name: policies
      configMap:
        name: {{ include "edge-gateway.policiesConfigMapName" . }}
    # ConfigMap keys cannot hold "/": items lay them out as <name>/<version>.yaml.
    - name: prompts
      configMap:
        name: {{ include "edge-gateway.promptsConfigMapName" . }}
        {{- with include "edge-gateway.promptFiles" . | fromJson }}
        items:
          {{- range $path, $_ := . }}
          - key: {{ include "edge-gateway.promptKey" $path }}
            path: {{ $path }}
          {{- end }}
        {{- end }}
    - name: data
      {{- if eq .Values.persistence.type "pvc" }}
      persistentVolumeClaim:
        claimName: {{ include "edge-gateway.dataClaimName" . }}
      {{- else if eq .Values.persistence.type "hostPath" }}
      hostPath:
        path: {{ .Values.persistence.hostPath.path }}
        type: DirectoryOrCreate
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- if .Values.graphCache.enabled }}
    - name: graph-cache
      emptyDir:
        sizeLimit: {{ .Values.graphCache.sizeLimit }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- if eq .Values.model.source "pvc" }}
    - name: models
      persistentVolumeClaim:
        claimName: {{ include "edge-gateway.modelsClaimName" . }}
        readOnly: true
    {{- else if eq .Values.model.source "hostPath" }}
    - name: models
      hostPath:
        path: {{ .Values.model.hostPath.path }}
        type: Directory
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $spread := list }}
  {{- if and (eq .Values.kind "Deployment") (ne .Values.spreadAcrossNodes "none") }}
  {{- $spread = append $spread (dict
      "maxSkew" 1
      "topologyKey" "kubernetes.io/hostname"
      "whenUnsatisfiable" (ternary "DoNotSchedule" "ScheduleAnyway" (eq .Values.spreadAcrossNodes "hard"))
      "labelSelector" (dict "matchLabels" (include "edge-gateway.selectorLabels" . | fromYaml))) }}
  {{- end }}
  {{- $spread = concat $spread .Values.topologySpreadConstraints }}
  {{- with $spread }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
