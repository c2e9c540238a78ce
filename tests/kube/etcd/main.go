// Command etcd is etcd's server, built from the go.etcd.io/etcd/server/v3
// module at the version go.mod pins (see tests/kube/README.md).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
