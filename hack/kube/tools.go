//go:build tools

// Package tools pins the control-plane binaries the local stack builds: `go build` of these import
// paths, in this module, gives kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and etcd at the versions go.mod
// requires (each k8s.io staging module replaced by its release's v0.x.y, as Kubernetes' own go.mod
// replaces them with ./staging).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
