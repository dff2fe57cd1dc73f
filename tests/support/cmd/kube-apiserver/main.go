// Command kube-apiserver is Lockstep's test control plane: an embedded etcd and
// a real kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver/app) in one
// process, optionally supervising a kube-controller-manager child process.
//
// Contract (the Rust test fixture, tools.sh and dev.sh rely on it):
//
//	env RIG_DIR                 required; directory it may write into (made absolute)
//	env RIG_PORT                secure port; unset or 0 = a free loopback port
//	env RIG_CONTROLLER_MANAGER  optional path to the kube-controller-manager binary;
//	                            started once the apiserver is ready, stopped on exit
//	env RIG_EXIT_ON_STDIN_EOF   "1" = stdin reaching EOF is a stop signal
//	env RIG_RESUME              "1" = restart on what an earlier start left in RIG_DIR:
//	                            certificates, tokens, etcd data and etcd ports are kept
//	args                        extra kube-apiserver flags, appended last (they win)
//
// Files in RIG_DIR: ca.crt, apiserver.crt (leaf+CA), apiserver.key, sa.key,
// tokens.csv, admin.token (user admin, group system:masters), nobody.token
// (user nobody, no groups), node.token (user system:node:rig-node, group system:nodes: the rig
// node's kubelet, held to its own node's objects by Node authorization), etcd/ (wiped at start unless resuming), etcd.ports
// and, once GET /readyz answers 200, kubeconfig (written atomically). Then exactly one line
// "READY <absolute kubeconfig path>" goes to stdout; everything else goes to
// stderr. SIGTERM/SIGINT (or stdin EOF, see above) stops the controller-manager,
// the apiserver and etcd, and the process exits 0.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // for timeZone support in CronJob

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go prometheus plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const (
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	startTimeout         = 120 * time.Second
	kcmReadyTimeout      = 60 * time.Second
	stopTimeout          = 30 * time.Second
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "rig: "+format+"\n", args...)
}

func main() { os.Exit(run()) }

func run() int {
	dir := os.Getenv("RIG_DIR")
	if dir == "" {
		logf("RIG_DIR is required")
		return 2
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		logf("RIG_DIR: %v", err)
		return 2
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("RIG_DIR: %v", err)
		return 2
	}
	port := 0
	if p := os.Getenv("RIG_PORT"); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 0 || port > 65535 {
			logf("bad RIG_PORT %q", p)
			return 2
		}
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			logf("free port: %v", err)
			return 1
		}
	}
	kcmPath := os.Getenv("RIG_CONTROLLER_MANAGER")
	if kcmPath != "" {
		if kcmPath, err = filepath.Abs(kcmPath); err == nil {
			_, err = os.Stat(kcmPath)
		}
		if err != nil {
			logf("RIG_CONTROLLER_MANAGER: %v", err)
			return 2
		}
	}

	// Stop triggers. The apiserver command installs its own SIGTERM/SIGINT
	// handler when it is constructed (a second signal makes it os.Exit(1));
	// signal.Notify here just lets us see the same signals.
	stop := make(chan string, 4)
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigc
		stop <- "signal " + s.String()
	}()
	if os.Getenv("RIG_EXIT_ON_STDIN_EOF") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "stdin EOF"
		}()
	}

	// RIG_RESUME=1 restarts a control plane stopped earlier in the same RIG_DIR (start it
	// on the same RIG_PORT): certificates, tokens and etcd's data and ports are kept, so
	// clients holding the old kubeconfig reconnect as they would to a restarted apiserver.
	resume := os.Getenv("RIG_RESUME") == "1"
	_ = os.Remove(filepath.Join(dir, "kubeconfig")) // never leave a stale one around
	caPEM, adminTok, err := pki(dir, resume)
	if err != nil {
		logf("pki: %v", err)
		return 1
	}

	// Embedded etcd (a fresh data dir on every start unless resuming).
	etcdDir := filepath.Join(dir, "etcd")
	if !resume {
		if err := os.RemoveAll(etcdDir); err != nil {
			logf("clean etcd dir: %v", err)
			return 1
		}
	}
	etcd, etcdURL, err := startEtcd(etcdDir, filepath.Join(dir, "etcd.ports"), resume)
	if err != nil {
		logf("etcd: %v", err)
		return 1
	}
	stopEtcd := func() {
		done := make(chan struct{})
		go func() { etcd.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			logf("etcd did not stop within 10s")
		}
	}
	select {
	case r := <-stop:
		logf("stopping (%s) before the apiserver started", r)
		stopEtcd()
		return 0
	default:
	}

	// kube-apiserver, in-process.
	p := func(name string) string { return filepath.Join(dir, name) }
	flags := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		// A value only: it is what the `kubernetes` Service would point at. With
		// endpoint reconciler "none" loopback is accepted and nothing dials it.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
		"--cert-dir=" + p("certs"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--token-auth-file=" + p("tokens.csv"),
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + p("sa.key"),
		"--service-account-signing-key-file=" + p("sa.key"),
		// Loopback: a client that dials a Service's ClusterIP (a pod left with the
		// default KUBERNETES_SERVICE_HOST) is refused on 127.0.1.x at once, and no
		// private address can ever be a target.
		"--service-cluster-ip-range=127.0.1.0/24",
		"--allow-privileged=true",
		"--profiling=false",
		"-v=0",
	}
	if kcmPath == "" {
		// No serviceaccount controller creates the "default" ServiceAccounts.
		flags = append(flags, "--disable-admission-plugins=ServiceAccount")
	}
	flags = append(flags, os.Args[1:]...)

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(flags)
	cmd.SetOut(os.Stderr) // keep stdout for the READY line only
	cmd.SetErr(os.Stderr)
	apiDone := make(chan int, 1)
	go func() { apiDone <- cli.Run(cmd) }()

	// shutdown stops everything in order; selfSignal asks the apiserver to stop
	// through its own signal handler (needed when the trigger was not a signal).
	var kcm *child
	shutdown := func(reason string, selfSignal bool) int {
		logf("stopping (%s)", reason)
		if kcm != nil {
			kcm.stop(5 * time.Second)
		}
		code := 0
		if selfSignal {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
		select {
		case code = <-apiDone:
		case <-time.After(stopTimeout):
			logf("apiserver did not stop within %s", stopTimeout)
			code = 1
		}
		stopEtcd()
		logf("stopped")
		return code
	}

	client := httpsClient(caPEM)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitFor(ctx, client, base+"/readyz", adminTok) }()
	select {
	case r := <-stop:
		return shutdown(r, !strings.HasPrefix(r, "signal"))
	case code := <-apiDone:
		logf("kube-apiserver exited with code %d before it was ready", code)
		stopEtcd()
		if code == 0 {
			code = 1
		}
		return code
	case err := <-readyErr:
		if err != nil {
			logf("apiserver not ready: %v", err)
			return shutdown("not ready", true) | 1
		}
	}

	kubeconfig := p("kubeconfig")
	if err := writeAtomic(kubeconfig, kubeconfigYAML(base, caPEM, adminTok), 0o600); err != nil {
		logf("write kubeconfig: %v", err)
		return shutdown("kubeconfig", true) | 1
	}

	if kcmPath != "" {
		kcm, err = startChild(kcmPath, []string{
			"--kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=0",
			"--leader-elect=false",
			"--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller," +
				"serviceaccount-token-controller,root-ca-certificate-publisher-controller",
			"--service-account-private-key-file=" + p("sa.key"),
			"--root-ca-file=" + p("ca.crt"),
			"--use-service-account-credentials=false",
			"-v=0",
		})
		if err != nil {
			logf("kube-controller-manager: %v", err)
			return shutdown("kcm start failed", true) | 1
		}
		// The serviceaccount controller creating default/default proves the
		// controller-manager is up and its informers have synced.
		kctx, kcancel := context.WithTimeout(context.Background(), kcmReadyTimeout)
		go func() {
			readyErr <- waitFor(kctx, client, base+"/api/v1/namespaces/default/serviceaccounts/default", adminTok)
		}()
		select {
		case r := <-stop:
			kcancel()
			return shutdown(r, !strings.HasPrefix(r, "signal"))
		case err := <-readyErr:
			kcancel()
			if err != nil {
				logf("kube-controller-manager not ready: %v", err)
				return shutdown("kcm not ready", true) | 1
			}
		case <-kcm.done:
			kcancel()
			logf("kube-controller-manager exited early: %v", kcm.err)
			return shutdown("kcm exited", true) | 1
		}
	}

	fmt.Fprintf(os.Stdout, "READY %s\n", kubeconfig)
	_ = os.Stdout.Sync()

	var kcmDone <-chan struct{}
	if kcm != nil {
		kcmDone = kcm.done
	}
	for {
		select {
		case r := <-stop:
			return shutdown(r, !strings.HasPrefix(r, "signal"))
		case code := <-apiDone:
			logf("kube-apiserver exited unexpectedly with code %d", code)
			apiDone <- code
			return shutdown("apiserver exited", false) | 1
		case <-kcmDone:
			logf("kube-controller-manager exited unexpectedly: %v (apiserver keeps running)", kcm.err)
			kcmDone = nil
		}
	}
}

// pki writes the serving certificate, the service-account key and the static tokens
// into dir, or with resume reads back the ones a previous start wrote. It returns the CA
// certificate and the admin token.
func pki(dir string, resume bool) ([]byte, string, error) {
	if resume {
		caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
		if err != nil {
			return nil, "", fmt.Errorf("resume: %w", err)
		}
		tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			return nil, "", fmt.Errorf("resume: %w", err)
		}
		return caPEM, strings.TrimSpace(string(tok)), nil
	}
	caPEM, certPEM, keyPEM, err := makeServingCert()
	if err != nil {
		return nil, "", fmt.Errorf("serving cert: %w", err)
	}
	saPEM, err := makeECKeyPEM()
	if err != nil {
		return nil, "", fmt.Errorf("sa key: %w", err)
	}
	adminTok, nobodyTok, nodeTok := randHex(24), randHex(24), randHex(24)
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.crt", caPEM, 0o644},
		{"apiserver.crt", append(append([]byte{}, certPEM...), caPEM...), 0o644},
		{"apiserver.key", keyPEM, 0o600},
		{"sa.key", saPEM, 0o600},
		{"tokens.csv", []byte(fmt.Sprintf("%s,admin,admin,\"system:masters\"\n%s,nobody,nobody\n%s,system:node:rig-node,rig-node,\"system:nodes\"\n", adminTok, nobodyTok, nodeTok)), 0o600},
		{"admin.token", []byte(adminTok + "\n"), 0o600},
		{"nobody.token", []byte(nobodyTok + "\n"), 0o600},
		{"node.token", []byte(nodeTok + "\n"), 0o600},
	}
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, "", fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return caPEM, adminTok, nil
}

// ---- etcd ----

// etcdPorts returns etcd's client and peer ports: the ones recorded in portsFile when
// resuming (a restarted member keeps its URLs), otherwise two free ones, recorded.
func etcdPorts(portsFile string, resume bool) (int, int, error) {
	if resume {
		if b, err := os.ReadFile(portsFile); err == nil {
			var cp, pp int
			if _, err := fmt.Sscanf(string(b), "%d %d", &cp, &pp); err == nil {
				return cp, pp, nil
			}
		}
	}
	cp, err := freePort()
	if err != nil {
		return 0, 0, err
	}
	pp, err := freePort()
	if err != nil {
		return 0, 0, err
	}
	if err := writeAtomic(portsFile, []byte(fmt.Sprintf("%d %d\n", cp, pp)), 0o644); err != nil {
		return 0, 0, err
	}
	return cp, pp, nil
}

func startEtcd(dataDir, portsFile string, resume bool) (*embed.Etcd, string, error) {
	cp, pp, err := etcdPorts(portsFile, resume)
	if err != nil {
		return nil, "", err
	}
	cu := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(cp))}
	pu := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(pp))}
	cfg := embed.NewConfig()
	cfg.Name = "rig"
	cfg.Dir = dataDir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = true
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.WatchProgressNotifyInterval = 5 * time.Second
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, cu.String(), nil
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", errors.New("not ready within 60s")
	}
}

// ---- kube-controller-manager child ----

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startChild runs the binary from a goroutine locked to its OS thread, so that
// Pdeathsig (delivered when the *thread* that forked dies) only fires when this
// process dies: the child can never outlive us, even after SIGKILL.
func startChild(path string, args []string) (*child, error) {
	c := &child{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		c.cmd = exec.Command(path, args...)
		c.cmd.Stdin = nil
		c.cmd.Stdout = os.Stderr
		c.cmd.Stderr = os.Stderr
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	logf("started kube-controller-manager pid %d", c.cmd.Process.Pid)
	return c, nil
}

func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		logf("kube-controller-manager did not stop within %s, killing", grace)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// ---- helpers ----

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func makeECKeyPEM() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// makeServingCert returns a fresh CA and a serving cert for 127.0.0.1, ::1 and
// localhost signed by it (ECDSA P-256).
func makeServingCert() (caPEM, certPEM, keyPEM []byte, err error) {
	now := time.Now().Add(-time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lockstep-rig-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(2)),
		Subject:               pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func httpsClient(caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			Proxy:           nil, // loopback only, never via a proxy
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
}

// waitFor polls url with the bearer token until it answers 200.
func waitFor(ctx context.Context, c *http.Client, url, token string) error {
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %v (last: %s)", url, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func kubeconfigYAML(server string, caPEM []byte, token string) []byte {
	ca := base64.StdEncoding.EncodeToString(caPEM)
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lockstep-rig
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: lockstep-rig
  context:
    cluster: lockstep-rig
    user: admin
    namespace: default
current-context: lockstep-rig
preferences: {}
`, server, ca, token))
}
