package kubernetes_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

const nodeLocal = "overlays/node-local"

// kustomizeBin builds the kustomize pinned in tools/kustomize.mod once.
var kustomizeBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tokenbroker-kustomize-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kustomize")
	out, err := exec.Command("go", "build", "-modfile", "../../tools/kustomize.mod", "-o", bin, "sigs.k8s.io/kustomize/kustomize/v5").CombinedOutput()
	if err != nil {
		return "", errors.New("go build kustomize: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

// built is the output of `kustomize build dir`, each document decoded
// strictly into its Kubernetes type, by kind.
type built struct {
	daemonSets  []appsv1.DaemonSet
	deployments []appsv1.Deployment
	configMaps  []corev1.ConfigMap
	services    []corev1.Service
	accounts    []corev1.ServiceAccount
	netpols     []networkingv1.NetworkPolicy
	pdbs        []policyv1.PodDisruptionBudget
}

func kustomizeBuild(t *testing.T, dir string) *built {
	t.Helper()
	if testing.Short() {
		t.Skip("builds kustomize")
	}
	bin, err := kustomizeBin()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "build", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kustomize build %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	b := &built{}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		var err error
		switch meta.Kind {
		case "DaemonSet":
			err = strictAppend(doc, &b.daemonSets)
		case "Deployment":
			err = strictAppend(doc, &b.deployments)
		case "ConfigMap":
			err = strictAppend(doc, &b.configMaps)
		case "Service":
			err = strictAppend(doc, &b.services)
		case "ServiceAccount":
			err = strictAppend(doc, &b.accounts)
		case "NetworkPolicy":
			err = strictAppend(doc, &b.netpols)
		case "PodDisruptionBudget":
			err = strictAppend(doc, &b.pdbs)
		default:
			t.Errorf("kustomize build %s: a %s this test does not check", dir, meta.Kind)
		}
		if err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, meta.Kind, err)
		}
	}
	return b
}

func strictAppend[T any](doc []byte, list *[]T) error {
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// TestKustomizeBuildBase: `kubectl apply -k deploy/kubernetes` gets the
// base, labelled and with the published image.
func TestKustomizeBuildBase(t *testing.T) {
	b := kustomizeBuild(t, ".")
	if len(b.deployments) != 1 || len(b.services) != 1 || len(b.pdbs) != 1 || len(b.daemonSets) != 0 {
		t.Fatalf("deployments %d, services %d, PDBs %d, daemon sets %d; want the base's", len(b.deployments), len(b.services), len(b.pdbs), len(b.daemonSets))
	}
	if img := b.deployments[0].Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/tokenbroker/tokenbroker:latest" {
		t.Errorf("image %q", img)
	}
}

// nodeLocalConfig is the overlay's broker.yaml, parsed by the broker's own
// parser (the credentials files, absent here, only fail their tenant).
func nodeLocalConfig(t *testing.T, cm corev1.ConfigMap) *config.Config {
	t.Helper()
	cfg, err := config.ParseWith([]byte(cm.Data["broker.yaml"]), "broker.yaml", "/etc/tokenbroker/config", config.Options{KeepTenantsOnFileError: true})
	if err != nil {
		t.Fatalf("the overlay's broker.yaml: %v", err)
	}
	return cfg
}

// TestNodeLocalOverlay: the overlay builds into a hardened DaemonSet and
// nothing of the network broker; the broker listens only on a socket in
// the host directory it mounts, of a group its pod holds; its probes use
// the admin port it listens on; the base's NetworkPolicy still selects it.
func TestNodeLocalOverlay(t *testing.T) {
	b := kustomizeBuild(t, nodeLocal)
	if len(b.deployments)+len(b.services)+len(b.pdbs) != 0 || len(b.daemonSets) != 1 || len(b.configMaps) != 1 || len(b.netpols) != 1 || len(b.accounts) != 1 {
		t.Fatalf("deployments %d, services %d, PDBs %d, daemon sets %d, config maps %d; want only the DaemonSet and its config",
			len(b.deployments), len(b.services), len(b.pdbs), len(b.daemonSets), len(b.configMaps))
	}
	ds, cfg := b.daemonSets[0], nodeLocalConfig(t, b.configMaps[0])
	if cfg.Listen != "" || cfg.Socket.Path != "/run/tokenbroker/broker.sock" || cfg.Socket.FileMode() != 0o660 {
		t.Errorf("broker.yaml listens on %q and socket %+v; want only the socket, mode 0660", cfg.Listen, cfg.Socket)
	}
	pod := ds.Spec.Template.Spec
	gid, err := strconv.ParseInt(cfg.Socket.Group, 10, 64)
	if err != nil || !slices.Contains(pod.SecurityContext.SupplementalGroups, gid) {
		t.Errorf("unix_socket.group %q is not among the pod's supplementalGroups %v: the broker could not give it the socket", cfg.Socket.Group, pod.SecurityContext.SupplementalGroups)
	}
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
		t.Error("the update must not surge: two brokers on a node share one socket path")
	}
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod must run as non-root, without a service account token")
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 1 {
		t.Fatalf("%d containers, %d init containers; want the broker and socket-dir", len(pod.Containers), len(pod.InitContainers))
	}
	broker, initc := pod.Containers[0], pod.InitContainers[0]
	if sc := broker.SecurityContext; sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Error("the broker container must be read-only, without privilege escalation or capabilities")
	}
	if sc := initc.SecurityContext; sc == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN", "FOWNER"}) {
		t.Error("socket-dir may only chown and chmod")
	}
	if img := broker.Image; img != "ghcr.io/tokenbroker/tokenbroker:latest" {
		t.Errorf("image %q: the overlay's images transformer did not apply", img)
	}
	if ds.Labels["app.kubernetes.io/part-of"] != "tokenbroker" || !selects(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) ||
		!selects(b.netpols[0].Spec.PodSelector.MatchLabels, ds.Spec.Template.Labels) {
		t.Error("labels: the DaemonSet must be labelled, select its pods, and the NetworkPolicy must select them")
	}

	// The socket's directory is the host's, in both containers.
	hostDir := socketVolume(t, pod.Volumes)
	if want := filepath.Dir(cfg.Socket.Path); hostDir != want {
		t.Errorf("the hostPath volume is %s, want the socket's directory %s", hostDir, want)
	}
	for _, c := range []corev1.Container{broker, initc} {
		if m := mountOf(c, "socket"); m == nil || m.MountPath != filepath.Dir(cfg.Socket.Path) || m.ReadOnly {
			t.Errorf("%s mounts the socket directory at %+v, want %s read-write", c.Name, m, filepath.Dir(cfg.Socket.Path))
		}
	}
	if !strings.Contains(strings.Join(initc.Command, " "), "chown 10010:"+cfg.Socket.Group+" "+hostDir) {
		t.Errorf("socket-dir does not give %s to the broker's uid 10010 and the socket's group: %v", hostDir, initc.Command)
	}
	if pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser != 10010 {
		t.Error("the broker must run as uid 10010, the owner socket-dir gives the directory")
	}

	// Probes: the admin port, where broker.yaml's admin listener is.
	admin := int32(0)
	for _, p := range broker.Ports {
		if p.Name == "admin" {
			admin = p.ContainerPort
		}
	}
	if !strings.HasSuffix(cfg.Admin.Listen, ":"+strconv.Itoa(int(admin))) || strings.HasPrefix(cfg.Admin.Listen, "127.") {
		t.Errorf("admin.listen %q, container port %d: the kubelet could not probe it", cfg.Admin.Listen, admin)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": broker.ReadinessProbe, "liveness": broker.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe must be an HTTP probe of the admin port, got %+v", name, p)
		}
	}
}

// TestNodeLocalExampleClient: the example client pod is a caller of the
// overlay's broker: its uid is a caller's, it holds the socket's group,
// mounts the host directory and names the socket in TOKENBROKER_ADDR.
func TestNodeLocalExampleClient(t *testing.T) {
	b := kustomizeBuild(t, nodeLocal)
	cfg := nodeLocalConfig(t, b.configMaps[0])
	var client appsv1.Deployment
	decode(t, filepath.Join(nodeLocal, "example-client.yaml"), &client)
	pod := client.Spec.Template.Spec
	uid := pod.SecurityContext.RunAsUser
	var caller string
	for _, c := range cfg.Callers {
		if c.UnixUID != nil && uid != nil && int64(*c.UnixUID) == *uid {
			caller = c.Name
		}
	}
	if caller == "" {
		t.Errorf("the client's runAsUser %v is no caller's unix_uid", uid)
	}
	gid, _ := strconv.ParseInt(cfg.Socket.Group, 10, 64)
	if !slices.Contains(pod.SecurityContext.SupplementalGroups, gid) {
		t.Errorf("the client does not hold the socket's group %s: the kernel would refuse its connect", cfg.Socket.Group)
	}
	if hostDir := socketVolume(t, pod.Volumes); hostDir != socketVolume(t, b.daemonSets[0].Spec.Template.Spec.Volumes) {
		t.Errorf("the client mounts host %s, the broker another directory", hostDir)
	}
	var addr string
	for _, e := range pod.Containers[0].Env {
		if e.Name == "TOKENBROKER_ADDR" {
			addr = e.Value
		}
	}
	if m := mountOf(pod.Containers[0], "tokenbroker"); addr != "unix://"+cfg.Socket.Path || m == nil || m.MountPath != filepath.Dir(cfg.Socket.Path) {
		t.Errorf("TOKENBROKER_ADDR %q, mount %+v; want unix://%s in the mounted directory", addr, m, cfg.Socket.Path)
	}

	// Every file of the overlay is used, or is this example.
	var k kustomization
	decode(t, filepath.Join(nodeLocal, "kustomization.yaml"), &k)
	used := append([]string{"kustomization.yaml", "example-client.yaml"}, k.Resources...)
	for _, p := range k.Patches {
		used = append(used, p.Path)
	}
	files, _ := filepath.Glob(filepath.Join(nodeLocal, "*.yaml"))
	for _, f := range files {
		if !slices.Contains(used, filepath.Base(f)) {
			t.Errorf("%s is not used by the overlay's kustomization", f)
		}
	}
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// socketVolume is the path of the pod's only hostPath volume.
func socketVolume(t *testing.T, vols []corev1.Volume) string {
	t.Helper()
	var paths []string
	for _, v := range vols {
		if v.HostPath != nil {
			paths = append(paths, v.HostPath.Path)
		}
	}
	if len(paths) != 1 {
		t.Fatalf("hostPath volumes %v, want exactly the socket's directory", paths)
	}
	return paths[0]
}

func mountOf(c corev1.Container, volume string) *corev1.VolumeMount {
	for i, m := range c.VolumeMounts {
		if m.Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}
