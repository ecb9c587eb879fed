#!/usr/bin/env bash
# Provisions the Vagrant VM (Debian 12) as a one-node kubeadm cluster whose kubelet pulls images
# through pullgate, then shows pullgate at work: a local registry with a signed and an unsigned
# copy of one image, and a pod for each (vagrant/pods/).
#
# Runs as root, once per `vagrant up` or `vagrant provision`; every step checks whether it is
# done already, so a second run only catches up (and reinstalls pullgate if it changed).
#
# PULLGATE_SRC     the repository in the VM (default /pullgate)
# PULLGATE_BINARY  the pullgate binary built on the host (default /tmp/pullgate)
set -euo pipefail

SRC=${PULLGATE_SRC:-/pullgate}
BINARY=${PULLGATE_BINARY:-/tmp/pullgate}
# Kubernetes minor release (pkgs.k8s.io has one repository per minor: core:/stable:/<minor>/deb/)
# and the cosign release used to sign the demo. v1.35 is supported until the end of February
# 2027 (each minor gets about 14 months) and is the last minor that runs on containerd 1.x.
# Debian 12 packages containerd 1.6, older than the 1.7 and 2.x that 1.35 is tested with; a
# later minor needs containerd 2.x on the box first.
KUBERNETES=v1.35
COSIGN=v2.4.1
REGISTRY=127.0.0.1:5000
DEMO=/root/pullgate-demo
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n=== %s\n' "$*"; }

[ -x "$BINARY" ] || chmod +x "$BINARY"
"$BINARY" --version

step "kernel settings kubeadm checks: no swap, bridged traffic through iptables, forwarding"
swapoff -a
sed -i '/\sswap\s/s/^[^#]/#&/' /etc/fstab
printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/kubernetes.conf
modprobe overlay
modprobe br_netfilter
cat >/etc/sysctl.d/90-kubernetes.conf <<'EOF'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
EOF
sysctl --system >/dev/null

step "containerd, runc, a local registry, skopeo"
apt-get update -q
apt-get install -y -q --no-install-recommends \
    containerd runc docker-registry skopeo curl gpg ca-certificates apt-transport-https

step "Kubernetes $KUBERNETES packages (pkgs.k8s.io)"
if [ ! -f /etc/apt/sources.list.d/kubernetes.list ]; then
    install -d -m 0755 /etc/apt/keyrings
    curl -fsSL "https://pkgs.k8s.io/core:/stable:/$KUBERNETES/deb/Release.key" |
        gpg --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/$KUBERNETES/deb/ /" \
        >/etc/apt/sources.list.d/kubernetes.list
    apt-get update -q
fi
apt-get install -y -q kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl >/dev/null

step "containerd: systemd cgroups, kubeadm's pause image, plain HTTP to the local registry"
pause=$(kubeadm config images list --kubernetes-version "$(kubeadm version -o short)" 2>/dev/null | grep /pause:)
mkdir -p /etc/containerd "/etc/containerd/certs.d/$REGISTRY"
containerd config default >/etc/containerd/config.toml
sed -i \
    -e 's/SystemdCgroup = false/SystemdCgroup = true/' \
    -e "s|sandbox_image = \".*\"|sandbox_image = \"$pause\"|" \
    -e '/\[plugins."io.containerd.grpc.v1.cri".registry\]/,/^\s*\[/ s|config_path = ""|config_path = "/etc/containerd/certs.d"|' \
    /etc/containerd/config.toml
cat >"/etc/containerd/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
systemctl restart containerd
systemctl enable --now docker-registry

step "cosign $COSIGN, a demo key, and the demo images: one signed, one not"
if [ ! -x /usr/local/bin/cosign ]; then
    curl -fsSLo /usr/local/bin/cosign \
        "https://github.com/sigstore/cosign/releases/download/$COSIGN/cosign-linux-amd64"
    chmod 0755 /usr/local/bin/cosign
fi
mkdir -p "$DEMO"
chmod 0700 "$DEMO"
if [ ! -f "$DEMO/cosign.key" ]; then
    (cd "$DEMO" && COSIGN_PASSWORD='' cosign generate-key-pair)
fi
for name in signed unsigned; do
    skopeo copy --dest-tls-verify=false "docker://$pause" "docker://$REGISTRY/demo/$name:v1"
done
digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY/demo/signed:v1")
COSIGN_PASSWORD='' cosign sign --yes --key "$DEMO/cosign.key" --tlog-upload=false \
    --allow-insecure-registry --allow-http-registry "$REGISTRY/demo/signed@$digest"

step "pullgate: installer/install.sh (before kubeadm init, so kubelet's first pull is verified)"
# The policy with the demo key's public half in place of DEMO_PUBLIC_KEY, indented as the line was.
awk -v keyfile="$DEMO/cosign.pub" '
    /DEMO_PUBLIC_KEY/ {
        indent = $0; sub(/DEMO_PUBLIC_KEY.*/, "", indent)
        while ((getline line < keyfile) > 0) print indent line
        next
    }
    { print }
' "$SRC/vagrant/policy.yaml" >"$DEMO/policy.yaml"
"$BINARY" policy check "$DEMO/policy.yaml"
"$SRC/installer/install.sh" --binary "$BINARY" --config "$SRC/vagrant/config.yaml" \
    --policy "$DEMO/policy.yaml"
systemctl --no-pager status pullgate.service | head -n 5

step "kubeadm init (single node, flannel's pod network)"
if [ ! -f /etc/kubernetes/admin.conf ]; then
    kubeadm init --pod-network-cidr=10.244.0.0/16 --cri-socket unix:///run/containerd/containerd.sock
fi
export KUBECONFIG=/etc/kubernetes/admin.conf
for home in /root /home/vagrant; do
    mkdir -p "$home/.kube"
    cp /etc/kubernetes/admin.conf "$home/.kube/config"
done
chown -R vagrant:vagrant /home/vagrant/.kube
# One node: workloads run on the control plane.
kubectl taint nodes --all node-role.kubernetes.io/control-plane- 2>/dev/null || true
kubectl apply -f https://github.com/flannel-io/flannel/releases/latest/download/kube-flannel.yml
kubectl wait --for=condition=Ready node --all --timeout=300s

step "the demo: a signed and an unsigned pod"
kubectl apply -f "$SRC/vagrant/pods/"
kubectl wait --for=condition=Ready pod/signed --timeout=120s
for _ in $(seq 60); do
    if kubectl get pod unsigned -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' |
        grep -qE 'ErrImagePull|ImagePullBackOff'; then
        break
    fi
    sleep 2
done
kubectl get pods -o wide
kubectl get events --field-selector involvedObject.name=unsigned -o custom-columns=REASON:.reason,MESSAGE:.message |
    grep -m 1 SignatureValidationFailed
/usr/local/bin/pullgate audit verify /var/log/pullgate/audit.jsonl
tail -n 2 /var/log/pullgate/audit.jsonl
