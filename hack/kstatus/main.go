// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus/status), which Flux and
// kubectl's apply --wait rely on, makes of Kubernetes objects: one JSON line per object read from standard
// input (an object or a List, as `kubectl get -o json` prints them).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(2, "reading standard input: %v", err)
	}
	// The unstructured JSON scheme keeps integers as int64, as the API machinery does.
	decoded, err := runtime.Decode(unstructured.UnstructuredJSONScheme, data)
	if err != nil {
		fail(2, "decoding standard input: %v", err)
	}
	var objects []unstructured.Unstructured
	switch value := decoded.(type) {
	case *unstructured.UnstructuredList:
		objects = value.Items
	case *unstructured.Unstructured:
		objects = []unstructured.Unstructured{*value}
	default:
		fail(2, "unexpected input of type %T", decoded)
	}
	out := json.NewEncoder(os.Stdout)
	for i := range objects {
		u := &objects[i]
		result, err := status.Compute(u)
		if err != nil {
			fail(1, "%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if err := out.Encode(verdict{u.GetKind(), u.GetName(), result.Status.String(), result.Message}); err != nil {
			fail(1, "writing: %v", err)
		}
	}
}

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(code)
}
