package main

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// side is which registries a command talks to.
type side int

const (
	pullSide side = iota // base and final images
	pushSide             // the destination
)

// globalFlags are the flags every command shares.
type globalFlags struct {
	platforms []string
	osName    string
	arch      string

	user, password, creds            string
	baseCreds, finalCreds, destCreds string
	passwordStdin                    bool

	insecure  bool
	plainHTTP bool
	scheme    string
	caCert    string
	cert, key string
	namespace string
	mountFrom []string
	tempDir   string
	jobs      int
	retries   int
	retryWait time.Duration
	stall     time.Duration

	progress string
	quiet    bool
}

func (g *globalFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&g.platforms, "platform", nil, "keep only this platform, os/arch[/variant] (repeatable), or all (default: the image as published)")
	fs.StringVar(&g.osName, "os", "", "shorthand for --platform OS/ARCH: the operating system (default: this machine's, when --arch is given)")
	fs.StringVar(&g.arch, "arch", "", "shorthand for --platform OS/ARCH: the architecture (default: this machine's, when --os is given)")

	fs.StringVar(&g.creds, "creds", "", "USER:PASS for every registry (default: docker config and credential helpers)")
	fs.StringVarP(&g.user, "user", "u", "", "user name for every registry")
	fs.StringVarP(&g.password, "password", "p", "", "password for every registry (prefer --password-stdin)")
	fs.BoolVar(&g.passwordStdin, "password-stdin", false, "read the password from standard input")
	fs.StringVar(&g.baseCreds, "base-creds", "", "USER:PASS for the base image's registry")
	fs.StringVar(&g.finalCreds, "final-creds", "", "USER:PASS for the final image's registry")
	fs.StringVar(&g.destCreds, "dest-creds", "", "USER:PASS for the destination registry")

	fs.BoolVarP(&g.insecure, "insecure", "i", false, "do not verify TLS certificates")
	fs.BoolVar(&g.plainHTTP, "plain-http", false, "talk plain HTTP to the registries (default: HTTPS, never falling back)")
	fs.StringVarP(&g.scheme, "scheme", "s", "https", "https, or http (same as --plain-http)")
	fs.StringVarP(&g.caCert, "cacert", "x", "", "PEM file of CA certificates to trust besides the system's")
	fs.StringVarP(&g.cert, "cert", "c", "", "PEM client certificate for mutual TLS (with --key)")
	fs.StringVarP(&g.key, "key", "k", "", "PEM client key for mutual TLS (with --cert)")
	fs.StringVarP(&g.namespace, "ns", "n", "", "pull through a mirror: send ns=NAMESPACE (the upstream registry) on every request")
	fs.StringVar(&g.tempDir, "temp-dir", "", "where temporary files go: sub-layer work and archives pushed from standard input (default: the system's)")
	fs.StringArrayVar(&g.mountFrom, "mount-from", nil, "vet and push: take blobs the archive leaves out from this repository of the destination registry (repeatable)")
	fs.IntVarP(&g.jobs, "jobs", "j", 4, "requests made at once where order does not matter")
	fs.IntVar(&g.retries, "retries", 4, "retries of a transient failure, per request and per blob (0: none)")
	fs.DurationVar(&g.retryWait, "retry-wait", 250*time.Millisecond, "wait before the first retry; each next one waits three times longer")
	fs.DurationVar(&g.stall, "stall-timeout", 30*time.Second, "give up on a registry request that gets no answer, or no byte of a body, for this long, and retry it (0: wait for ever)")

	fs.StringVar(&g.progress, "progress", "auto", "auto (bars on a terminal, plain lines otherwise), bars, plain, json or none; on stderr")
	fs.BoolVarP(&g.quiet, "quiet", "q", false, "no progress (same as --progress none)")
}

// options turns the flags into library options for a command that talks
// to the given side.
func (g *globalFlags) options(cmd *cobra.Command, s side) ([]imo.Option, error) {
	var opts []imo.Option
	reporter, err := g.reporter(cmd)
	if err != nil {
		return nil, err
	}
	opts = append(opts, imo.WithReporter(reporter), imo.WithJobs(g.jobs), imo.WithRetries(g.retries, g.retryWait), imo.WithStallTimeout(g.stall))
	if g.jobs < 1 {
		return nil, usagef("--jobs must be at least 1")
	}
	if g.retries < 0 || g.retryWait < 0 || g.stall < 0 {
		return nil, usagef("--retries, --retry-wait and --stall-timeout must not be negative")
	}

	platforms, all, err := g.platformList()
	if err != nil {
		return nil, err
	}
	if all {
		opts = append(opts, imo.WithAllArchitectures())
	} else if len(platforms) > 0 {
		opts = append(opts, imo.WithPlatforms(platforms...))
	}

	credOpts, err := g.credentials(cmd, s)
	if err != nil {
		return nil, err
	}
	opts = append(opts, credOpts...)

	switch g.scheme {
	case "https":
	case "http":
		g.plainHTTP = true
	default:
		return nil, usagef("--scheme must be http or https, not %q", g.scheme)
	}
	if g.plainHTTP {
		opts = append(opts, imo.WithPlainHTTP())
	}
	if g.insecure {
		fmt.Fprintln(cmd.ErrOrStderr(), "imo: warning: --insecure: TLS certificates are not verified")
		opts = append(opts, imo.WithInsecure())
	}
	if g.caCert != "" {
		pem, err := os.ReadFile(g.caCert)
		if err != nil {
			return nil, usagef("--cacert: %v", err)
		}
		opts = append(opts, imo.WithCABundle(pem))
	}
	if (g.cert == "") != (g.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if g.cert != "" {
		pair, err := tls.LoadX509KeyPair(g.cert, g.key)
		if err != nil {
			return nil, usagef("--cert/--key: %v", err)
		}
		opts = append(opts, imo.WithClientCertificate(pair))
	}
	if g.namespace != "" {
		opts = append(opts, imo.WithNamespace(g.namespace))
	}
	if g.tempDir != "" {
		opts = append(opts, imo.WithTempDir(g.tempDir))
	}
	if len(g.mountFrom) > 0 {
		opts = append(opts, imo.WithMountFrom(g.mountFrom...))
	}
	return opts, nil
}

func (g *globalFlags) reporter(cmd *cobra.Command) (imo.Reporter, error) {
	w := cmd.ErrOrStderr()
	mode := g.progress
	if g.quiet {
		mode = "none"
	}
	switch mode {
	case "auto":
		return imo.NewWriterReporter(w), nil
	case "bars":
		return imo.NewBarReporter(w), nil
	case "plain":
		return imo.NewLineReporter(w), nil
	case "json":
		return imo.NewJSONReporter(w), nil
	case "none":
		return imo.ReporterFunc(func(imo.Event) {}), nil
	}
	return nil, usagef("--progress must be auto, bars, plain, json or none, not %q", g.progress)
}

// platformList parses --platform, --os and --arch; all is true for
// --platform all.
func (g *globalFlags) platformList() (ps []v1.Platform, all bool, err error) {
	for _, s := range g.platforms {
		if s == "all" {
			all = true
			continue
		}
		p, err := v1.ParsePlatform(s)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, false, usagef("--platform %q: want os/arch[/variant]", s)
		}
		ps = append(ps, *p)
	}
	if g.osName != "" || g.arch != "" {
		p := v1.Platform{OS: g.osName, Architecture: g.arch}
		if p.OS == "" {
			p.OS = runtime.GOOS
		}
		if p.Architecture == "" {
			p.Architecture = runtime.GOARCH
		}
		ps = append(ps, p)
	}
	if all && len(ps) > 0 {
		return nil, false, usagef("--platform all conflicts with other platforms")
	}
	return ps, all, nil
}

// credentials returns the options for the explicit credentials of the
// registries on side s; without any, the keychain is used.
func (g *globalFlags) credentials(cmd *cobra.Command, s side) ([]imo.Option, error) {
	if g.passwordStdin {
		if g.password != "" {
			return nil, usagef("--password and --password-stdin conflict")
		}
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && line == "" {
			return nil, usagef("--password-stdin: no password on standard input")
		}
		g.password = strings.TrimRight(line, "\r\n")
	}
	every := g.creds
	if every == "" && (g.user != "" || g.password != "") {
		if g.user == "" {
			return nil, usagef("--password needs --user")
		}
		every = g.user + ":" + g.password
	}
	var opts []imo.Option
	for _, c := range []struct {
		flag, value string
		sides       side
		with        func(user, pass string) imo.Option
	}{
		{"base-creds", cmp.Or(g.baseCreds, every), pullSide, imo.WithBaseAuth},
		{"final-creds", cmp.Or(g.finalCreds, every), pullSide, imo.WithFinalAuth},
		{"dest-creds", cmp.Or(g.destCreds, every), pushSide, imo.WithPushAuth},
	} {
		if c.value == "" || c.sides != s {
			continue
		}
		user, pass, ok := strings.Cut(c.value, ":")
		if !ok || user == "" {
			return nil, usagef("--%s (or --creds): want USER:PASS", c.flag)
		}
		opts = append(opts, c.with(user, pass))
	}
	return opts, nil
}
