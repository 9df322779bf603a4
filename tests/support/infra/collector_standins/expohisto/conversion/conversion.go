// Package conversion stands in for the exponential-histogram converter: it refuses every
// call, so the transform processor's convert_exponential_histogram fails at config load.
package conversion

import (
	"errors"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// Buckets is one side of an exponential histogram.
type Buckets struct {
	Offset int32
	Counts pcommon.UInt64Slice
}

// ExponentialHistogram is the converter's input.
type ExponentialHistogram struct {
	Count         uint64
	Scale         int32
	ZeroThreshold float64
	ZeroCount     uint64
	Positive      Buckets
	Negative      Buckets
}

// ToExplicit always fails.
func ToExplicit(ExponentialHistogram, []float64, string) ([]uint64, error) {
	return nil, errors.New("exponential histograms are not supported by the govpipe test collector")
}
