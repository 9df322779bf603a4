// Package otlpencodingextension stands in for a module only fileexporter's tests import:
// `go mod tidy` resolves test imports too, and the proxy refuses this one. The Collector
// binary never imports it.
package otlpencodingextension
