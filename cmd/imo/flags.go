package main

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imokit/imo"
	"github.com/spf13/cobra"
)

// flags are the flags the commands share. Each command registers the
// groups it uses, so that a flag a command would ignore is a usage error;
// fields of groups not registered keep their defaults.
type flags struct {
	cmd *cobra.Command

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

	verifyKeys []string
}

// newFlags returns the flags of cmd, with their defaults.
func newFlags(cmd *cobra.Command) *flags {
	return &flags{cmd: cmd, scheme: "https", jobs: 4, retries: 4, retryWait: 250 * time.Millisecond, stall: 30 * time.Second, progress: "auto"}
}

// platform registers --platform, --os and --arch.
func (f *flags) platform() *flags {
	fs := f.cmd.Flags()
	fs.StringArrayVar(&f.platforms, "platform", nil, "keep only this platform, os/arch[/variant] (repeatable), or all (default: the image as published)")
	fs.StringVar(&f.osName, "os", "", "shorthand for --platform OS/ARCH: the operating system (default: this machine's, when --arch is given)")
	fs.StringVar(&f.arch, "arch", "", "shorthand for --platform OS/ARCH: the architecture (default: this machine's, when --os is given)")
	return f
}

// credentials registers the credentials of every registry, and of the
// sides named: "base", "final", "dest".
func (f *flags) credentials(sides ...string) *flags {
	fs := f.cmd.Flags()
	fs.StringVar(&f.creds, "creds", "", "USER:PASS for every registry (default: docker config and credential helpers)")
	fs.StringVarP(&f.user, "user", "u", "", "user name for every registry")
	fs.StringVarP(&f.password, "password", "p", "", "password for every registry (prefer --password-stdin)")
	fs.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from standard input")
	for _, s := range sides {
		switch s {
		case "base":
			fs.StringVar(&f.baseCreds, "base-creds", "", "USER:PASS for the base image's registry")
		case "final":
			fs.StringVar(&f.finalCreds, "final-creds", "", "USER:PASS for the final image's registry")
		case "dest":
			fs.StringVar(&f.destCreds, "dest-creds", "", "USER:PASS for the destination registry")
		}
	}
	return f
}

// network registers how registries are reached: TLS, plain HTTP, retries
// and the stall timeout.
func (f *flags) network() *flags {
	fs := f.cmd.Flags()
	fs.BoolVarP(&f.insecure, "insecure", "i", false, "do not verify TLS certificates")
	fs.BoolVar(&f.plainHTTP, "plain-http", false, "talk plain HTTP to the registries (default: HTTPS, never falling back)")
	fs.StringVarP(&f.scheme, "scheme", "s", "https", "https, or http (same as --plain-http)")
	fs.StringVarP(&f.caCert, "cacert", "x", "", "PEM file of CA certificates to trust besides the system's")
	fs.StringVarP(&f.cert, "cert", "c", "", "PEM client certificate for mutual TLS (with --key)")
	fs.StringVarP(&f.key, "key", "k", "", "PEM client key for mutual TLS (with --cert)")
	fs.IntVar(&f.retries, "retries", 4, "retries of a transient failure, per request and per blob (0: none)")
	fs.DurationVar(&f.retryWait, "retry-wait", 250*time.Millisecond, "wait before the first retry; each next one waits three times longer")
	fs.DurationVar(&f.stall, "stall-timeout", 30*time.Second, "give up on a registry request that gets no answer, or no byte of a body, for this long, and retry it (0: wait for ever)")
	return f
}

// mirror registers --ns.
func (f *flags) mirror() *flags {
	f.cmd.Flags().StringVarP(&f.namespace, "ns", "n", "", "pull through a mirror: send ns=NAMESPACE (the upstream registry) on every request")
	return f
}

// transfer registers --jobs and the progress flags.
func (f *flags) transfer() *flags {
	fs := f.cmd.Flags()
	fs.IntVarP(&f.jobs, "jobs", "j", 4, "requests made at once where order does not matter; with 2 or more, a blob of 32 MiB or more comes in 16 MiB ranges at once")
	fs.StringVar(&f.progress, "progress", "auto", "auto (bars on a terminal, plain lines otherwise), bars, plain, json or none; on stderr")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "no progress (same as --progress none)")
	return f
}

// temp registers --temp-dir.
func (f *flags) temp(what string) *flags {
	f.cmd.Flags().StringVar(&f.tempDir, "temp-dir", "", "where temporary files go: "+what+" (default: the system's)")
	return f
}

// mounts registers --mount-from.
func (f *flags) mounts() *flags {
	f.cmd.Flags().StringArrayVar(&f.mountFrom, "mount-from", nil, "take blobs the archive leaves out from this repository of the destination registry (repeatable)")
	return f
}

// incremental builds the library client from the flags, with extra options.
func (f *flags) incremental(extra ...imo.Option) (*imo.Incremental, error) {
	opts, err := f.options()
	if err != nil {
		return nil, err
	}
	return imo.New(append(opts, extra...)...), nil
}

// options turns the flags into library options.
func (f *flags) options() ([]imo.Option, error) {
	if f.jobs < 1 {
		return nil, usagef("--jobs must be at least 1")
	}
	if f.retries < 0 || f.retryWait < 0 || f.stall < 0 {
		return nil, usagef("--retries, --retry-wait and --stall-timeout must not be negative")
	}
	reporter, err := f.reporter()
	if err != nil {
		return nil, err
	}
	opts := []imo.Option{imo.WithReporter(reporter), imo.WithJobs(f.jobs), imo.WithRetries(f.retries, f.retryWait), imo.WithStallTimeout(f.stall)}
	platforms, all, err := f.platformList()
	if err != nil {
		return nil, err
	}
	if all {
		opts = append(opts, imo.WithAllArchitectures())
	} else if len(platforms) > 0 {
		opts = append(opts, imo.WithPlatforms(platforms...))
	}
	creds, err := f.credentialOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, creds...)
	tlsOpts, err := f.transportOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, tlsOpts...)
	if f.namespace != "" {
		opts = append(opts, imo.WithNamespace(f.namespace))
	}
	if f.tempDir != "" {
		opts = append(opts, imo.WithTempDir(f.tempDir))
	}
	if len(f.mountFrom) > 0 {
		opts = append(opts, imo.WithMountFrom(f.mountFrom...))
	}
	trust, err := f.trustOptions()
	if err != nil {
		return nil, err
	}
	return append(opts, trust...), nil
}

// transportOptions are the options of --scheme, --plain-http, --insecure,
// --cacert, --cert and --key.
func (f *flags) transportOptions() ([]imo.Option, error) {
	var opts []imo.Option
	switch f.scheme {
	case "https":
	case "http":
		f.plainHTTP = true
	default:
		return nil, usagef("--scheme must be http or https, not %q", f.scheme)
	}
	if f.plainHTTP {
		opts = append(opts, imo.WithPlainHTTP())
	}
	if f.insecure {
		fmt.Fprintln(f.cmd.ErrOrStderr(), "imo: warning: --insecure: TLS certificates are not verified")
		opts = append(opts, imo.WithInsecure())
	}
	if f.caCert != "" {
		pem, err := os.ReadFile(f.caCert)
		if err != nil {
			return nil, usagef("--cacert: %v", err)
		}
		opts = append(opts, imo.WithCABundle(pem))
	}
	if (f.cert == "") != (f.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, usagef("--cert/--key: %v", err)
		}
		opts = append(opts, imo.WithClientCertificate(pair))
	}
	return opts, nil
}

func (f *flags) reporter() (imo.Reporter, error) {
	w := f.cmd.ErrOrStderr()
	mode := f.progress
	if f.quiet {
		mode = "none"
	}
	switch mode {
	case "auto":
		if isTerminal(w) {
			return notes{imo.NewBarReporter(w), w}, nil
		}
		return notes{imo.NewLineReporter(w), w}, nil
	case "bars":
		return notes{imo.NewBarReporter(w), w}, nil
	case "plain":
		return notes{imo.NewLineReporter(w), w}, nil
	case "json":
		return imo.NewJSONReporter(w), nil
	case "none":
		return notes{nil, w}, nil
	}
	return nil, usagef("--progress must be auto, bars, plain, json or none, not %q", f.progress)
}

// notes prints the events a user must hear of whatever the progress shown
// (a pull that resumes, or that does not), and passes the others on.
type notes struct {
	next imo.Reporter
	w    io.Writer
}

// Report implements [imo.Reporter].
func (n notes) Report(e imo.Event) {
	switch {
	case e.Kind == imo.PullResumed || e.Kind == imo.PartialDiscarded:
		fmt.Fprintf(n.w, "imo: %s\n", e)
	case n.next != nil:
		n.next.Report(e)
	}
}

// platformList parses --platform, --os and --arch; all is true for
// --platform all.
func (f *flags) platformList() (ps []v1.Platform, all bool, err error) {
	for _, s := range f.platforms {
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
	if f.osName != "" || f.arch != "" {
		p := v1.Platform{OS: f.osName, Architecture: f.arch}
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

// credentialOptions returns the options for the explicit credentials the
// command was given; without any, the keychain is used.
func (f *flags) credentialOptions() ([]imo.Option, error) {
	if f.passwordStdin {
		if f.password != "" {
			return nil, usagef("--password and --password-stdin conflict")
		}
		line, err := bufio.NewReader(f.cmd.InOrStdin()).ReadString('\n')
		if err != nil && line == "" {
			return nil, usagef("--password-stdin: no password on standard input")
		}
		f.password = strings.TrimRight(line, "\r\n")
	}
	every := f.creds
	if every == "" && (f.user != "" || f.password != "") {
		if f.user == "" {
			return nil, usagef("--password needs --user")
		}
		every = f.user + ":" + f.password
	}
	var opts []imo.Option
	for _, c := range []struct {
		flag, value string
		with        func(user, pass string) imo.Option
	}{
		{"base-creds", cmp.Or(f.baseCreds, every), imo.WithBaseAuth},
		{"final-creds", cmp.Or(f.finalCreds, every), imo.WithFinalAuth},
		{"dest-creds", cmp.Or(f.destCreds, every), imo.WithPushAuth},
	} {
		if c.value == "" || f.cmd.Flags().Lookup(c.flag) == nil {
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
