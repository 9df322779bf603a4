// Command manifestcheck strict-decodes Kubernetes manifests into the k8s.io/api types:
// an unknown or misspelt field, a wrong type, a bad quantity or an unknown kind is an
// error. It reads multi-document YAML files named on the command line and prints one line
// per document (kind/name) or exits 1 naming what is wrong.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// object is what every known kind decodes into: its metadata is needed for the report.
type object interface {
	GetName() string
}

// known maps apiVersion and kind to a fresh value of the Go type the API server decodes.
func known(apiVersion, kind string) (object, bool) {
	types := map[string]func() object{
		"v1/ConfigMap":                       func() object { return &corev1.ConfigMap{} },
		"v1/Secret":                          func() object { return &corev1.Secret{} },
		"v1/Service":                         func() object { return &corev1.Service{} },
		"v1/ServiceAccount":                  func() object { return &corev1.ServiceAccount{} },
		"apps/v1/Deployment":                 func() object { return &appsv1.Deployment{} },
		"apps/v1/StatefulSet":                func() object { return &appsv1.StatefulSet{} },
		"policy/v1/PodDisruptionBudget":      func() object { return &policyv1.PodDisruptionBudget{} },
		"networking.k8s.io/v1/NetworkPolicy": func() object { return &networkingv1.NetworkPolicy{} },
	}
	fresh, ok := types[apiVersion+"/"+kind]
	if !ok {
		return nil, false
	}
	return fresh(), true
}

func check(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	documents := utilyaml.NewYAMLReader(bufio.NewReader(file))
	for i := 1; ; i++ {
		doc, err := documents.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if err := checkDocument(doc); err != nil {
			return fmt.Errorf("%s document %d: %w", path, i, err)
		}
	}
}

func checkDocument(doc []byte) error {
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return err
	}
	obj, ok := known(meta.APIVersion, meta.Kind)
	if !ok {
		return fmt.Errorf("unknown kind %q of apiVersion %q", meta.Kind, meta.APIVersion)
	}
	// Strict: an unknown field or a key given twice is an error, as `kubectl apply
	// --validate=strict` makes it.
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", meta.Kind, err)
	}
	fmt.Printf("%s/%s\n", meta.Kind, obj.GetName())
	return nil
}

func main() {
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
