// Package ottlfuncs stands in for the profile converters: a logs pipeline calls none.
package ottlfuncs

import "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/ottl"

// WithProfileConverters returns funcs unchanged.
func WithProfileConverters[K any](funcs map[string]ottl.Factory[K]) map[string]ottl.Factory[K] {
	return funcs
}
