//go:build tools

// Package tools pins, for `go mod tidy`, the modules the project's packages
// are being built on, so go.sum holds their checksums before every importer
// lands. It is never compiled.
package tools

import (
	_ "github.com/go-viper/mapstructure/v2"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/spf13/cobra"
	_ "github.com/spf13/pflag"
	_ "github.com/spf13/viper"
	_ "github.com/tuneinsight/lattigo/v5/core/rlwe"
	_ "github.com/tuneinsight/lattigo/v5/he/hefloat"
	_ "github.com/tuneinsight/lattigo/v5/mhe"
	_ "github.com/tuneinsight/lattigo/v5/mhe/mhefloat"
	_ "github.com/tuneinsight/lattigo/v5/ring"
	_ "github.com/tuneinsight/lattigo/v5/schemes/ckks"
	_ "github.com/tuneinsight/lattigo/v5/utils/sampling"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/crypto/curve25519"
	_ "golang.org/x/crypto/hkdf"
	_ "golang.org/x/mod/sumdb/note"
	_ "golang.org/x/mod/sumdb/tlog"
	_ "gonum.org/v1/plot"
	_ "gonum.org/v1/plot/plotter"
	_ "gonum.org/v1/plot/vg"
	_ "google.golang.org/grpc"
	_ "google.golang.org/grpc/health"
	_ "google.golang.org/protobuf/proto"
	_ "gorgonia.org/gorgonia"
	_ "gorgonia.org/tensor"
)
