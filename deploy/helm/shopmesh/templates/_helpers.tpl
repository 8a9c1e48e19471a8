{{/*
What each process is, declared once in mesh/services.toml and rendered into files/services.json
by scripts/render_manifests.py: its port, metrics port, gRPC service (the readiness health name),
whether it has a database, whether it is the HTTP gateway, and whom it calls. Every template
below loops over it; a test keeps the copy fresh.
*/}}
{{- define "shopmesh.components" -}}
{{ .Files.Get "files/services.json" }}
{{- end }}

{{/*
One component's values: the chart's serviceDefaults, overridden by the values under its name
(a service declared without a block of its own gets the defaults).
*/}}
{{- define "shopmesh.valuesOf" -}}
{{- $own := index .root.Values .name | default dict -}}
{{- mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $own) | toYaml -}}
{{- end }}

{{- define "shopmesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* Labels of every object; commonLabels leaves out the instance for those that add a selector's. */}}
{{- define "shopmesh.labels" -}}
{{ include "shopmesh.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shopmesh.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: shopmesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects one component's pods: (dict "root" $ "name" "order") */}}
{{- define "shopmesh.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "shopmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "shopmesh.host" -}}
{{ include "shopmesh.fullname" .root }}-{{ .name }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain }}
{{- end }}

{{- define "shopmesh.postgresql" -}}
{{ include "shopmesh.fullname" . }}-postgresql
{{- end }}

{{- define "shopmesh.bundledPostgresql" -}}
{{- if and (eq .Values.database.type "postgresql") .Values.postgresql.enabled (not .Values.externalDatabase.existingSecret) -}}true{{- end -}}
{{- end }}

{{- define "shopmesh.postgresqlSecret" -}}
{{ .Values.postgresql.auth.existingSecret | default (printf "%s-postgresql" (include "shopmesh.fullname" .)) }}
{{- end }}

{{/* The seconds a stopping pod may take: turning not ready (2), the drain, the grace, then at most 1.8 to
close and exit, the watchdog's bound (mesh/server/lifecycle.py); 5 covers both. */}}
{{- define "shopmesh.terminationGrace" -}}
{{ add (int .Values.shutdown.drainSeconds) (int .Values.shutdown.graceSeconds) 5 }}
{{- end }}

{{/* Refusals of values that are each valid but do not work together. */}}
{{- define "shopmesh.validate" -}}
{{- $components := include "shopmesh.components" . | fromYaml -}}
{{- if eq .Values.database.type "sqlite" -}}
{{- range $name, $c := $components -}}
{{- if $c.database -}}
{{- $values := include "shopmesh.valuesOf" (dict "root" $ "name" $name) | fromYaml -}}
{{- if or (gt (int $values.replicas) 1) $values.autoscaling.enabled -}}
{{- fail (printf "%s.replicas is %d (autoscaling %v) but database.type is sqlite: a SQLite file has one writer, so each service runs one replica on it. Set %s.replicas=1 and %s.autoscaling.enabled=false, or use database.type=postgresql." $name (int $values.replicas) $values.autoscaling.enabled $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.database.type "postgresql") (not .Values.postgresql.enabled) (not .Values.externalDatabase.existingSecret) -}}
{{- fail "database.type is postgresql but there is no server: set externalDatabase.existingSecret (a Secret with one URL per service) or postgresql.enabled=true (the bundled one)" -}}
{{- end -}}
{{- if and (eq .Values.discovery.type "consul") (not .Values.discovery.consul.address) -}}
{{- fail "discovery.type is consul: set discovery.consul.address to the Consul agent's host:port" -}}
{{- end -}}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) -}}
{{- fail "auth.enabled needs auth.existingSecret: a Secret with jwt-secret and/or api-keys (secrets never come from values)" -}}
{{- end -}}
{{- if and .Values.gateway.ingress.enabled (not .Values.gateway.ingress.host) -}}
{{- fail "gateway.ingress.enabled needs gateway.ingress.host" -}}
{{- end -}}
{{- end }}

{{/*
A gRPC health probe. Plaintext: Kubernetes' native gRPC probe. Over mTLS the kubelet's probe
cannot present a certificate, so the pod's own grpc-health-probe (in the image) asks with the
pod's certificate instead.
*/}}
{{- define "shopmesh.grpcProbe" -}}
{{- if .tls -}}
exec:
  command: [grpc-health-probe, "-addr=127.0.0.1:{{ .port }}", "-service={{ .service }}", -tls, -tls-ca-cert=/etc/shopmesh/tls/ca.pem, "-tls-client-cert=/etc/shopmesh/tls/{{ .name }}.pem", "-tls-client-key=/etc/shopmesh/tls/{{ .name }}-key.pem", "-tls-server-name={{ .serverName }}"]
{{- else -}}
grpc: {port: {{ .port }}, service: {{ .service }}}
{{- end -}}
{{- end }}
