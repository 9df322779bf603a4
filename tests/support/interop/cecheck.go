// cecheck: what a Go consumer of govpipe output sees. Reads one JSON request per line on
// stdin: {"headers": [[name, base64]], "value": base64} for a Kafka record (structured or
// binary content mode, told apart by the headers) or {"value": base64} for a stdout line.
// For each it rebuilds the event with the CloudEvents Go SDK (sdk-go/v2), validates it, and,
// for Ed25519 events, verifies the signature over the RFC 8785 form from gowebpki/jcs.
// Writes one line per request: "ok" or "error: <why>".
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/gowebpki/jcs"
)

type request struct {
	Headers [][2]string `json:"headers"`
	Value   string      `json:"value"`
}

type header struct {
	name  string
	value []byte
}

// kafkaMessage is a binding.Message over one Kafka record, as the SDK's kafka_sarama
// protocol reads one: ce_ headers are attributes, content-type is datacontenttype.
type kafkaMessage struct {
	headers []header
	value   []byte
}

var versions = spec.WithPrefix("ce_")

func (m *kafkaMessage) contentType() string {
	for _, h := range m.headers {
		if strings.ToLower(h.name) == "content-type" {
			return string(h.value)
		}
	}
	return ""
}

func (m *kafkaMessage) ReadEncoding() binding.Encoding {
	if format.Lookup(m.contentType()) != nil {
		return binding.EncodingStructured
	}
	return binding.EncodingBinary
}

func (m *kafkaMessage) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	f := format.Lookup(m.contentType())
	if f == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, f, strings.NewReader(string(m.value)))
}

func (m *kafkaMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	version := versions.Version("1.0")
	for _, h := range m.headers {
		lower := strings.ToLower(h.name)
		if lower == "content-type" {
			if err := w.SetAttribute(version.AttributeFromKind(spec.DataContentType), string(h.value)); err != nil {
				return err
			}
		} else if strings.HasPrefix(lower, "ce_") {
			if attr := version.Attribute(h.name); attr != nil {
				if err := w.SetAttribute(attr, string(h.value)); err != nil {
					return err
				}
			} else if err := w.SetExtension(h.name[3:], string(h.value)); err != nil {
				return err
			}
		}
	}
	if len(m.value) > 0 {
		return w.SetData(strings.NewReader(string(m.value)))
	}
	return nil
}

func (m *kafkaMessage) Finish(error) error { return nil }

func (m *kafkaMessage) header(name string) interface{} {
	for _, h := range m.headers {
		if strings.EqualFold(h.name, name) {
			return string(h.value)
		}
	}
	return nil
}

// GetAttribute and GetExtension make the record a binding.MessageMetadataReader.
func (m *kafkaMessage) GetAttribute(k spec.Kind) (spec.Attribute, interface{}) {
	attr := versions.Version("1.0").AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if k == spec.DataContentType {
		return attr, m.header("content-type")
	}
	return attr, m.header(attr.PrefixedName())
}

func (m *kafkaMessage) GetExtension(name string) interface{} {
	return m.header("ce_" + name)
}

// jsonForm rebuilds the structured JSON form of the signed event from the raw record,
// attribute strings as written (the SDK re-formats time), data per its content type.
func jsonForm(m *kafkaMessage) (map[string]any, error) {
	if m.ReadEncoding() == binding.EncodingStructured {
		var out map[string]any
		return out, json.Unmarshal(m.value, &out)
	}
	out := map[string]any{}
	for _, h := range m.headers {
		lower := strings.ToLower(h.name)
		if lower == "content-type" {
			out["datacontenttype"] = string(h.value)
		} else if strings.HasPrefix(lower, "ce_") {
			out[h.name[3:]] = string(h.value)
		}
	}
	if len(m.value) == 0 {
		return out, nil
	}
	ct, _ := out["datacontenttype"].(string)
	media := strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	switch {
	case ct == "" || media == "application/json" || media == "text/json" || strings.HasSuffix(media, "+json"):
		out["data"] = json.RawMessage(m.value)
	case strings.HasPrefix(media, "text/"):
		out["data"] = string(m.value)
	default:
		out["data_base64"] = base64.StdEncoding.EncodeToString(m.value)
	}
	return out, nil
}

func check(m *kafkaMessage, key ed25519.PublicKey) error {
	e, err := binding.ToEvent(context.Background(), m)
	if err != nil {
		return fmt.Errorf("sdk-go refused the record: %w", err)
	}
	if err := e.Validate(); err != nil {
		return fmt.Errorf("sdk-go: invalid event: %w", err)
	}
	form, err := jsonForm(m)
	if err != nil {
		return err
	}
	if form["id"] != e.ID() || form["type"] != e.Type() || form["source"] != e.Source() {
		return fmt.Errorf("sdk-go read other attributes than were written")
	}
	if alg, _ := form["agtsignaturealg"].(string); alg == "Ed25519" {
		return verify(form, key)
	}
	return nil
}

func verify(form map[string]any, key ed25519.PublicKey) error {
	signature, err := base64.StdEncoding.DecodeString(fmt.Sprint(form["agtsignature"]))
	if err != nil {
		return fmt.Errorf("agtsignature is not base64")
	}
	delete(form, "agtsignature")
	raw, err := json.Marshal(form)
	if err != nil {
		return err
	}
	canonical, err := jcs.Transform(raw)
	if err != nil {
		return fmt.Errorf("gowebpki/jcs: %w", err)
	}
	if !ed25519.Verify(key, canonical, signature) {
		return fmt.Errorf("Ed25519 signature does not verify over the JCS form")
	}
	return nil
}

func main() {
	key, err := hex.DecodeString(os.Args[1])
	if err != nil || len(key) != ed25519.PublicKeySize {
		fmt.Fprintln(os.Stderr, "usage: cecheck PUBLIC_KEY_HEX < requests")
		os.Exit(2)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	for in.Scan() {
		fmt.Println(handle(in.Bytes(), key))
	}
}

func handle(line []byte, key ed25519.PublicKey) string {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return "error: bad request: " + err.Error()
	}
	m := &kafkaMessage{}
	var err error
	if m.value, err = base64.StdEncoding.DecodeString(req.Value); err != nil {
		return "error: bad value"
	}
	if req.Headers == nil { // a stdout line: the structured JSON format
		m.headers = []header{{"content-type", []byte(event.ApplicationCloudEventsJSON)}}
	}
	for _, h := range req.Headers {
		value, err := base64.StdEncoding.DecodeString(h[1])
		if err != nil {
			return "error: bad header"
		}
		m.headers = append(m.headers, header{h[0], value})
	}
	if err := check(m, key); err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}
