{{/* Names (<= 63 characters, DNS-1123) and the app.kubernetes.io/* labels. */}}

{{- define "semforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "semforge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", the component suffix kept whole: the prefix is cut instead. */}}
{{- define "semforge.componentName" -}}
{{- $c := .component -}}
{{- $prefix := include "semforge.fullname" .root | trunc (int (sub 62 (len $c))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix $c -}}
{{- end -}}

{{- define "semforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "semforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "semforge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "semforge.labels" -}}
{{ include "semforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: semforge
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "semforge.chart" .root }}
{{- end -}}

{{/* image reference of a semforge component: its own repository/tag, else the chart defaults */}}
{{- define "semforge.image" -}}
{{- $v := .root.Values -}}
{{- $img := .values.image | default dict -}}
{{- $repo := $img.repository | default $v.image.repository -}}
{{- $tag := $img.tag | default $v.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "semforge.storeSecretName" -}}
{{- if and .Values.store.external.enabled .Values.store.external.existingSecret -}}
{{- .Values.store.external.existingSecret -}}
{{- else -}}
{{- include "semforge.componentName" (dict "root" . "component" "store") -}}
{{- end -}}
{{- end -}}

{{- define "semforge.storeEndpoint" -}}
{{- if .Values.store.external.enabled -}}
{{- required "store.external.endpoint is required when store.external.enabled (host:port)" .Values.store.external.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "semforge.componentName" (dict "root" . "component" "minio")) -}}
{{- else -}}
{{- fail "an object store is required: minio.enabled=true or store.external.enabled=true with store.external.endpoint" -}}
{{- end -}}
{{- end -}}

{{/* environment every semforge service reads: the object store (SEMFORGE_STORE + S3_*) and the server knobs */}}
{{- define "semforge.storeEnv" -}}
- name: SEMFORGE_STORE
  value: {{ printf "s3://%s" .Values.store.bucket | quote }}
- name: S3_ENDPOINT
  value: {{ include "semforge.storeEndpoint" . | quote }}
- name: S3_SECURE
  value: {{ ternary "1" "0" (and .Values.store.external.enabled .Values.store.external.secure) | quote }}
- name: S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "semforge.storeSecretName" . }}
      key: {{ .Values.store.external.accessKeyKey }}
- name: S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "semforge.storeSecretName" . }}
      key: {{ .Values.store.external.secretKeyKey }}
{{- end -}}

{{- define "semforge.cpuPlacement" -}}
{{- with .Values.cpuPool.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.cpuPool.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.cpuPool.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "semforge.gpuPlacement" -}}
{{- with .Values.gpuPool.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.gpuPool.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.gpuPool.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* resources, with the GPU request added (requests = limits for extended resources) when gpus > 0 */}}
{{- define "semforge.resources" -}}
{{- $res := deepCopy .resources -}}
{{- if .gpus -}}
{{- $_ := set $res.limits .root.Values.gpuPool.resourceName (int .gpus) -}}
{{- $_ := set $res.requests .root.Values.gpuPool.resourceName (int .gpus) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{- define "semforge.pdbCheck" -}}
{{- if and .values.pdb.enabled .values.autoscaling.enabled (ge (int .values.pdb.minAvailable) (int .values.autoscaling.minReplicas)) -}}
{{- fail (printf "%s.pdb.minAvailable (%d) must be below %s.autoscaling.minReplicas (%d): a drain could never evict a pod" .component (int .values.pdb.minAvailable) .component (int .values.autoscaling.minReplicas)) -}}
{{- end -}}
{{- if and .values.pdb.enabled (not .values.autoscaling.enabled) (ge (int .values.pdb.minAvailable) (int .values.replicas)) -}}
{{- fail (printf "%s.pdb.minAvailable (%d) must be below %s.replicas (%d)" .component (int .values.pdb.minAvailable) .component (int .values.replicas)) -}}
{{- end -}}
{{- end -}}

{{- /* Authentication (values: auth). Services behind the gateway accept only its shared secret; the gateway and
the services clients may call (render, translate) check bearer tokens from the tokens Secret. */ -}}
{{- define "semforge.serviceSecretName" -}}
{{- .Values.auth.serviceSecret | default (include "semforge.componentName" (dict "root" . "component" "service")) -}}
{{- end -}}

{{- define "semforge.tokensSecretName" -}}
{{- .Values.auth.tokensSecret | default (include "semforge.componentName" (dict "root" . "component" "tokens")) -}}
{{- end -}}

{{- define "semforge.behindGateway" -}}
{{- if has .component (list "segment" "measure" "classify") }}true{{ end -}}
{{- end -}}

{{- define "semforge.usesTokens" -}}
{{- if and (eq .root.Values.auth.gatewayMode "tokens") (not (include "semforge.behindGateway" .)) }}true{{ end -}}
{{- end -}}

{{- define "semforge.authEnv" -}}
- name: SEMFORGE_AUTH
  value: {{ if include "semforge.behindGateway" . }}service{{ else }}{{ .root.Values.auth.gatewayMode }}{{ end }}
- name: SEMFORGE_SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "semforge.serviceSecretName" .root }}
      key: serviceToken
{{- if include "semforge.usesTokens" . }}
- name: SEMFORGE_TOKENS
  value: /etc/semforge/tokens/tokens.json
{{- end }}
{{- end -}}

{{- /* Batch Jobs (gateway.batchBackend=kubernetes): the gateway's ServiceAccount, the Jobs' namespace and Secret. */ -}}
{{- define "semforge.batchOnKubernetes" -}}
{{- if and .Values.gateway.enabled (eq .Values.gateway.batchBackend "kubernetes") }}true{{ end -}}
{{- end -}}

{{- define "semforge.gatewayServiceAccount" -}}
{{- if .Values.rbac.create -}}
{{- include "semforge.componentName" (dict "root" . "component" "gateway") -}}
{{- else -}}
{{- required "gateway.batchBackend=kubernetes with rbac.create=false needs gateway.serviceAccountName: a ServiceAccount bound to a Role that may create/delete jobs and get jobs/status (docs/deploy.md)" .Values.gateway.serviceAccountName -}}
{{- end -}}
{{- end -}}

{{- define "semforge.batchNamespace" -}}
{{- .Values.gateway.batchJobs.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "semforge.batchStoreSecret" -}}
{{- .Values.gateway.batchJobs.storeSecret | default (include "semforge.storeSecretName" .) -}}
{{- end -}}

{{- define "semforge.batchCheck" -}}
{{- if and (include "semforge.batchOnKubernetes" .) (ne (include "semforge.batchNamespace" .) .Release.Namespace) -}}
{{- if not .Values.store.external.enabled -}}
{{- fail (printf "gateway.batchJobs.namespace=%s (not the release namespace): the worker pods there cannot reach the in-chart MinIO by its Service name; use store.external, or leave the namespace empty" .Values.gateway.batchJobs.namespace) -}}
{{- end -}}
{{- if not .Values.gateway.batchJobs.storeSecret -}}
{{- fail (printf "gateway.batchJobs.namespace=%s (not the release namespace): name the store Secret that exists there in gateway.batchJobs.storeSecret" .Values.gateway.batchJobs.namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}
