{{/*
Names and labels.
*/}}
{{- define "keypool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keypool.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "keypool.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "keypool.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "keypool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keypool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keypool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "keypool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "keypool.secretName" -}}
{{- default (printf "%s-secrets" (include "keypool.fullname" .)) .Values.secret.existingSecret }}
{{- end }}

{{/*
Sidecar injection. Another chart (with this one as a dependency, or a copy of these two
templates) adds keypool to its own Pod spec:
  containers:
    - name: my-app
      ...
    {{- include "keypool.sidecarContainer" . | nindent 4 }}
  volumes:
    {{- include "keypool.sidecarVolumes" . | nindent 4 }}
Both read .Values.keypool, .Values.secret, .Values.services, .Values.bootstrap and
.Values.persistence.
*/}}
{{- define "keypool.sidecarContainer" -}}
- name: keypool
  image: "{{ .Values.keypool.image.repository }}:{{ .Values.keypool.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.keypool.image.pullPolicy }}
  args: ["serve"]
  env:
    - name: SERVER_HOST
      value: {{ .Values.keypool.host | quote }}
    - name: SERVER_PORT
      value: {{ .Values.keypool.port | quote }}
    - name: WORKERS
      value: {{ .Values.keypool.workers | quote }}
    - name: DB_PATH
      value: /var/lib/keypool/pool.db
    - name: LOG_LEVEL
      value: {{ .Values.keypool.logLevel | quote }}
    - name: LOG_FORMAT
      value: {{ .Values.keypool.logFormat | quote }}
    - name: ENCRYPTION_KEY
      valueFrom:
        secretKeyRef:
          name: {{ include "keypool.secretName" . }}
          key: ENCRYPTION_KEY
    - name: ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "keypool.secretName" . }}
          key: ADMIN_TOKEN
    {{- if .Values.bootstrap.file }}
    - name: BOOTSTRAP_FILE
      value: /etc/keypool/bootstrap/bootstrap.yaml
    {{- end }}
    {{- with .Values.keypool.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.keypool.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.keypool.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.keypool.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.keypool.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: keypool-data
      mountPath: /var/lib/keypool
    - name: keypool-tmp
      mountPath: /tmp
    {{- if .Values.services }}
    - name: keypool-services
      mountPath: /etc/keypool/services.d
      readOnly: true
    {{- end }}
    {{- if .Values.bootstrap.file }}
    - name: keypool-bootstrap
      mountPath: /etc/keypool/bootstrap
      readOnly: true
    {{- end }}
    {{- if .Values.bootstrap.existingSecret }}
    - name: keypool-bootstrap-secrets
      mountPath: /etc/keypool/bootstrap-secrets
      readOnly: true
    {{- end }}
    {{- with .Values.keypool.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "keypool.sidecarVolumes" -}}
- name: keypool-data
  {{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "keypool.fullname" .)) }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: keypool-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- if .Values.services }}
- name: keypool-services
  configMap:
    name: {{ include "keypool.fullname" . }}-services
{{- end }}
{{- if .Values.bootstrap.file }}
- name: keypool-bootstrap
  configMap:
    name: {{ include "keypool.fullname" . }}-bootstrap
{{- end }}
{{- if .Values.bootstrap.existingSecret }}
- name: keypool-bootstrap-secrets
  secret:
    secretName: {{ .Values.bootstrap.existingSecret }}
    defaultMode: 0440   # root:fsGroup owns the files; the keypool group reads them
{{- end }}
{{- end }}
