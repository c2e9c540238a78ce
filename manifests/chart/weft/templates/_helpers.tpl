{{/*
Shared pieces of the templates. cli/src/install/render.rs renders the same
objects for `weft install`; keep the two in step (tests/tests/kube_chart.rs
compares them object by object).
*/}}

{{/* The labels of every object: weft.labels (list $ "weft-control"). */}}
{{- define "weft.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/part-of: weft
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
{{- end }}

{{/* An image: weft.image (list $ "weft-control"). */}}
{{- define "weft.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/%s:%s" $root.Values.image.registry (index . 1) ($root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end }}

{{/* A container's resources from a values block of the same shape. */}}
{{- define "weft.resources" -}}
requests:
  cpu: {{ .requests.cpu | quote }}
  memory: {{ .requests.memory | quote }}
limits:
  memory: {{ .limits.memory | quote }}
{{- end }}

{{/* The identity Secret is rendered when the issuer's PEMs are given. */}}
{{- define "weft.renderIssuer" -}}
{{- $i := .Values.identity -}}
{{- if or $i.issuer.certPEM $i.issuer.keyPEM -}}
{{- if not (and $i.issuer.certPEM $i.issuer.keyPEM $i.trustAnchorsPEM) -}}
{{- fail "identity.issuer.certPEM, identity.issuer.keyPEM and identity.trustAnchorsPEM go together: give all three (the chart renders the Secret), or neither PEM of the issuer (the Secret identity.issuer.secretName must exist)" -}}
{{- end -}}
true
{{- end -}}
{{- end }}
