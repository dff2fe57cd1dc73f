// Command kubelet is the upstream kubelet (k8s.io/kubernetes/cmd/kubelet/app) built from the same
// module as Lockstep's test kube-apiserver. The rig's node (tests/rig/src/node.rs) runs it against
// containerd, loopback only, when a test needs real pods.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go prometheus plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	code := cli.Run(command)
	os.Exit(code)
}
