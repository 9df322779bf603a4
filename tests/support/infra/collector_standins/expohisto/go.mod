module github.com/open-telemetry/opentelemetry-collector-contrib/pkg/expohisto

go 1.26.0

require go.opentelemetry.io/collector/pdata v1.71.0
