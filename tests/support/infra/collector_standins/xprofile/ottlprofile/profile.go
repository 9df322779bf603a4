// Package ottlprofile stands in for the OTTL profiles context. It parses no paths, so a
// profiles statement is refused when the config loads; logs statements never reach it.
package ottlprofile

import (
	"errors"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/ottl"
)

// ContextName is the name of the profiles context.
const ContextName = "profile"

// TransformContext is never built by a logs pipeline.
type TransformContext struct {
	profile pprofile.Profile
	cache   *pcommon.Map
}

// TransformContextOption configures a TransformContext.
type TransformContextOption func(*TransformContext)

// WithCache sets the external cache.
func WithCache(cache *pcommon.Map) TransformContextOption {
	return func(t *TransformContext) { t.cache = cache }
}

// NewTransformContext keeps only the profile: no path can read anything else.
func NewTransformContext(_ pprofile.ResourceProfiles, _ pprofile.ScopeProfiles, profile pprofile.Profile,
	_ pprofile.ProfilesDictionary, options ...TransformContextOption,
) *TransformContext {
	t := &TransformContext{profile: profile}
	for _, o := range options {
		o(t)
	}
	return t
}

// Close releases nothing.
func (*TransformContext) Close() {}

// EnablePathContextNames requires the profile context prefix on paths.
func EnablePathContextNames() ottl.Option[*TransformContext] {
	return ottl.WithPathContextNames[*TransformContext]([]string{ContextName})
}

// StatementSequenceOption configures a statement sequence.
type StatementSequenceOption func(*ottl.StatementSequence[*TransformContext])

// WithStatementSequenceErrorMode sets the error mode.
func WithStatementSequenceErrorMode(mode ottl.ErrorMode) StatementSequenceOption {
	return func(s *ottl.StatementSequence[*TransformContext]) {
		ottl.WithStatementSequenceErrorMode[*TransformContext](mode)(s)
	}
}

// NewStatementSequence builds a statement sequence.
func NewStatementSequence(statements []*ottl.Statement[*TransformContext], settings component.TelemetrySettings,
	options ...StatementSequenceOption,
) ottl.StatementSequence[*TransformContext] {
	s := ottl.NewStatementSequence(statements, settings)
	for _, o := range options {
		o(&s)
	}
	return s
}

// ConditionSequenceOption configures a condition sequence.
type ConditionSequenceOption func(*ottl.ConditionSequence[*TransformContext])

// WithConditionSequenceErrorMode sets the error mode.
func WithConditionSequenceErrorMode(mode ottl.ErrorMode) ConditionSequenceOption {
	return func(c *ottl.ConditionSequence[*TransformContext]) {
		ottl.WithConditionSequenceErrorMode[*TransformContext](mode)(c)
	}
}

// NewConditionSequence builds a condition sequence.
func NewConditionSequence(conditions []*ottl.Condition[*TransformContext], settings component.TelemetrySettings,
	options ...ConditionSequenceOption,
) ottl.ConditionSequence[*TransformContext] {
	c := ottl.NewConditionSequence(conditions, settings)
	for _, o := range options {
		o(&c)
	}
	return c
}

var errNoProfiles = errors.New("profiles are not supported by the govpipe test collector")

// NewParser returns a parser that refuses every path.
func NewParser(functions map[string]ottl.Factory[*TransformContext], settings component.TelemetrySettings,
	options ...ottl.Option[*TransformContext],
) (ottl.Parser[*TransformContext], error) {
	refuse := func(ottl.Path[*TransformContext]) (ottl.GetSetter[*TransformContext], error) {
		return nil, errNoProfiles
	}
	return ottl.NewParser(functions, refuse, settings, options...)
}
