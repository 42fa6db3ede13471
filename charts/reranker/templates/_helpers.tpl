{{/* The RerankerDeployment's name: it names the Service, so it must be a DNS label. */}}
{{- define "reranker.fullname" -}}
{{- $name := default .Release.Name .Values.fullnameOverride }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "the reranker name %q (release name or fullnameOverride) must be a DNS label: lower-case letters, digits and '-', starting with a letter" $name) }}
{{- end }}
{{- if gt (len $name) 52 }}
{{- fail (printf "the reranker name %q is longer than 52 characters (child names add suffixes such as -model-cache)" $name) }}
{{- end }}
{{- $name }}
{{- end }}
