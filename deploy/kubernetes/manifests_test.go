package kubernetes_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// The broker's own shutdown budget (drain, then in-flight calls).
const (
	drain           = 5 * time.Second
	shutdownTimeout = 10 * time.Second
)

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
	Patches []struct {
		Path  string `json:"path"`
		Patch string `json:"patch"`
	} `json:"patches"`
}

// decode reads file strictly: an unknown or duplicated field is an error,
// as kubectl apply --validate=strict would report it.
func decode(t *testing.T, file string, into any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

type manifests struct {
	sa      corev1.ServiceAccount
	cm      corev1.ConfigMap
	deploy  appsv1.Deployment
	svc     corev1.Service
	pdb     policyv1.PodDisruptionBudget
	netpol  networkingv1.NetworkPolicy
	byKind  map[string]string // kind -> file
	listed  []string
	unknown []string
}

// load reads the base's manifests, as its kustomization lists them.
func load(t *testing.T) *manifests {
	t.Helper()
	var k kustomization
	decode(t, filepath.Join("base", "kustomization.yaml"), &k)
	m := &manifests{byKind: map[string]string{}, listed: k.Resources}
	for _, name := range k.Resources {
		file := filepath.Join("base", name)
		var meta struct {
			Kind string `json:"kind"`
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("kustomization lists %s: %v", file, err)
		}
		if err := yaml.Unmarshal(data, &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var into any
		switch meta.Kind {
		case "ServiceAccount":
			into = &m.sa
		case "ConfigMap":
			into = &m.cm
		case "Deployment":
			into = &m.deploy
		case "Service":
			into = &m.svc
		case "PodDisruptionBudget":
			into = &m.pdb
		case "NetworkPolicy":
			into = &m.netpol
		default:
			m.unknown = append(m.unknown, file+": "+meta.Kind)
			continue
		}
		decode(t, file, into)
		m.byKind[meta.Kind] = file
	}
	return m
}

func TestEveryManifestIsListedAndKnown(t *testing.T) {
	m := load(t)
	if len(m.unknown) > 0 {
		t.Errorf("manifests of a kind this test does not check: %v", m.unknown)
	}
	files, _ := filepath.Glob("base/*.yaml")
	for _, f := range files {
		if f = filepath.Base(f); f != "kustomization.yaml" && !slices.Contains(m.listed, f) {
			t.Errorf("base/%s is not listed in base/kustomization.yaml resources", f)
		}
	}
	var root kustomization
	decode(t, "kustomization.yaml", &root)
	if !slices.Equal(root.Resources, []string{"base"}) {
		t.Errorf("kustomization.yaml lists %v, want the base alone (kubectl apply -k deploy/kubernetes)", root.Resources)
	}
	for _, kind := range []string{"ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if m.byKind[kind] == "" {
			t.Errorf("no %s in the base", kind)
		}
	}
}

func TestDeploymentIsHardened(t *testing.T) {
	m := load(t)
	d := m.deploy
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("pod must not automount a service account token")
	}
	if m.sa.AutomountServiceAccountToken == nil || *m.sa.AutomountServiceAccountToken {
		t.Error("service account must not automount its token")
	}
	if pod.ServiceAccountName != m.sa.Name {
		t.Errorf("pod runs as %q, want the base's service account %q", pod.ServiceAccountName, m.sa.Name)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext must set runAsNonRoot")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod must use the RuntimeDefault seccomp profile")
	}
	grace := pod.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= drain+shutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than drain %s + timeout %s", grace, drain, shutdownTimeout)
	}
	var spreadsNodes bool
	for _, c := range pod.TopologySpreadConstraints {
		if c.TopologyKey == "kubernetes.io/hostname" && c.WhenUnsatisfiable == corev1.DoNotSchedule {
			spreadsNodes = true
		}
	}
	if !spreadsNodes {
		t.Error("replicas must be spread across nodes (topologySpreadConstraints on kubernetes.io/hostname)")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("container root filesystem must be read-only")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("container must not allow privilege escalation")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
		t.Error("container must drop ALL capabilities and add none")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.GRPC == nil || p.GRPC.Port != 50051 {
			t.Errorf("%s probe must be a gRPC health probe on 50051, got %+v", name, p)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 50051 || ports["admin"] != 9464 {
		t.Errorf("container ports = %v, want grpc 50051 and admin 9464", ports)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
		if !vm.ReadOnly {
			t.Errorf("volume %s is mounted read-write", vm.Name)
		}
	}
	for _, v := range pod.Volumes {
		if _, ok := mounts[v.Name]; !ok {
			t.Errorf("volume %s is never mounted", v.Name)
		}
		if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0) {
			t.Errorf("secret volume %s must not be readable by group or others (strict_file_permissions)", v.Name)
		}
	}
	var cfgPath string
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			cfgPath = c.Args[i+1]
		}
	}
	if want := mounts["config"].MountPath + "/broker.yaml"; cfgPath != want {
		t.Errorf("--config %q, want the ConfigMap's mount %q", cfgPath, want)
	}
	if _, ok := m.cm.Data["broker.yaml"]; !ok {
		t.Error("ConfigMap has no broker.yaml")
	}
}

func TestSelectorsMatchThePods(t *testing.T) {
	m := load(t)
	podLabels := m.deploy.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		if len(sel) == 0 {
			return false
		}
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return true
	}
	if !matches(m.deploy.Spec.Selector.MatchLabels) {
		t.Error("Deployment selector does not match its pod template")
	}
	if !matches(m.svc.Spec.Selector) {
		t.Error("Service selector does not match the pods")
	}
	if m.pdb.Spec.Selector == nil || !matches(m.pdb.Spec.Selector.MatchLabels) {
		t.Error("PodDisruptionBudget selector does not match the pods")
	}
	if !matches(m.netpol.Spec.PodSelector.MatchLabels) {
		t.Error("NetworkPolicy does not select the pods")
	}
}

func TestServiceIsHeadlessForClientSideBalancing(t *testing.T) {
	m := load(t)
	if m.svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service clusterIP = %q, want None (headless, for dns:/// + round_robin)", m.svc.Spec.ClusterIP)
	}
	if m.pdb.Spec.MaxUnavailable == nil && m.pdb.Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}
}

func TestNetworkPolicyLimitsPorts(t *testing.T) {
	m := load(t)
	np := m.netpol.Spec
	if !slices.Contains(np.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatal("NetworkPolicy does not restrict ingress")
	}
	rules := map[string]networkingv1.NetworkPolicyIngressRule{}
	for _, r := range np.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil {
				t.Fatal("an ingress rule opens every port")
			}
			rules[p.Port.String()] = r
		}
	}
	grpc, admin := rules["grpc"], rules["admin"]
	if len(grpc.From) == 0 || grpc.From[0].PodSelector == nil || len(grpc.From[0].PodSelector.MatchLabels) == 0 {
		t.Error("gRPC port must be open only to labelled client pods")
	}
	if len(admin.From) == 0 || admin.From[0].NamespaceSelector == nil ||
		!strings.Contains(admin.From[0].NamespaceSelector.String(), "monitoring") {
		t.Error("admin port must be open only to the monitoring namespace")
	}
	if len(rules) != 2 {
		t.Errorf("ingress opens ports %v, want only grpc and admin", rules)
	}
}

// TestConfigMatchesDeployment: the broker.yaml in the ConfigMap listens
// where the container's ports and probes point, exposes the admin port to
// the cluster (Prometheus), and drains within the pod's grace period.
func TestConfigMatchesDeployment(t *testing.T) {
	m := load(t)
	var cfg struct {
		Listen string `json:"listen"`
		Admin  struct {
			Listen string `json:"listen"`
		} `json:"admin"`
		Shutdown struct {
			Drain   string `json:"drain"`
			Timeout string `json:"timeout"`
		} `json:"shutdown"`
	}
	if err := yaml.Unmarshal([]byte(m.cm.Data["broker.yaml"]), &cfg); err != nil {
		t.Fatalf("broker.yaml: %v", err)
	}
	if !strings.HasSuffix(cfg.Listen, ":50051") || !strings.HasSuffix(cfg.Admin.Listen, ":9464") {
		t.Errorf("broker.yaml listens on %q and admin %q; want :50051 and :9464 as the container ports say", cfg.Listen, cfg.Admin.Listen)
	}
	if strings.HasPrefix(cfg.Admin.Listen, "127.") {
		t.Errorf("admin.listen %q is loopback: Prometheus could not scrape the pod", cfg.Admin.Listen)
	}
	d, err1 := time.ParseDuration(cfg.Shutdown.Drain)
	to, err2 := time.ParseDuration(cfg.Shutdown.Timeout)
	if err1 != nil || err2 != nil {
		t.Fatalf("shutdown drain %q, timeout %q: want durations", cfg.Shutdown.Drain, cfg.Shutdown.Timeout)
	}
	grace := time.Duration(*m.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if d+to >= grace {
		t.Errorf("drain %s + timeout %s do not fit the grace period %s", d, to, grace)
	}
}
