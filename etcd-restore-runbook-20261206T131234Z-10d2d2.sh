# Break-glass runbook for etcd restore 20261206T131234Z-10d2d2 (kubectl dr), 1 control-plane node(s).
# Snapshot: backup 62f004ca, SHA-256 cde463aab034a094de5d1be2f06d92cc59f659c968a118638c6debe68e81e177, revision 45, etcd 3.5.16.
# Run each block as root on the node it names, in order: all nodes finish a step before the next.
# Needs on each node: etcdutl of the cluster's etcd minor (or etcdctl 3.5.x) in PATH, sha256sum, mv.

## 1. Copy the snapshot to every node and check it (the digest must match exactly).
# on cp-1:
mkdir -p /var/lib/kubectl-dr/restore/20261206T131234Z-10d2d2 && scp SNAPSHOT-FILE cp-1:/var/lib/kubectl-dr/restore/20261206T131234Z-10d2d2/snapshot.db
echo 'cde463aab034a094de5d1be2f06d92cc59f659c968a118638c6debe68e81e177  /var/lib/kubectl-dr/restore/20261206T131234Z-10d2d2/snapshot.db' | sha256sum -c -

## 2. On every node: stop the API server, controller-manager and scheduler, then etcd.
# on cp-1:
mkdir -p /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual
mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/
mv /etc/kubernetes/manifests/kube-controller-manager.yaml /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/
mv /etc/kubernetes/manifests/kube-scheduler.yaml /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/
# then, once no API server answers any more, on every node:
# on cp-1:
mv /etc/kubernetes/manifests/etcd.yaml /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/
# wait until etcd has stopped: `crictl ps --name etcd` lists nothing

## 3. On every node: restore the same snapshot into a new data dir and swap it in.
# on cp-1:
etcdutl snapshot restore /var/lib/kubectl-dr/restore/20261206T131234Z-10d2d2/snapshot.db --name cp-1 --data-dir /var/lib/etcd.restored-20261206T131234Z-10d2d2 --initial-cluster cp-1=https://127.0.0.1:52379 --initial-cluster-token kubectl-dr-20261206t131234z-10d2d2-c088 --initial-advertise-peer-urls https://127.0.0.1:52379 --bump-revision 1000000000 --mark-compacted
chmod 700 /var/lib/etcd.restored-20261206T131234Z-10d2d2
mv /var/lib/etcd /var/lib/etcd.before-20261206T131234Z-10d2d2 && mv /var/lib/etcd.restored-20261206T131234Z-10d2d2 /var/lib/etcd

## 4. etcd back on every node, then check the new cluster.
# on cp-1:
mv /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/etcd.yaml /etc/kubernetes/manifests/
curl -s http://127.0.0.1:38933/health?serializable=false   # {"health":"true"...} once all are up

## 5. On every node: the API server and the rest back, then restart the kubelet.
# on cp-1:
mv /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/kube-apiserver.yaml /etc/kubernetes/manifests/
mv /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/kube-controller-manager.yaml /etc/kubernetes/manifests/
mv /etc/kubernetes/kubectl-dr/20261206T131234Z-10d2d2-manual/kube-scheduler.yaml /etc/kubernetes/manifests/
systemctl restart kubelet

## Undo (before anything wrote to the new cluster): the same steps 2, 4 and 5 with, on each node:
# on cp-1:
mv /var/lib/etcd /var/lib/etcd.restored-20261206T131234Z-10d2d2 && mv /var/lib/etcd.before-20261206T131234Z-10d2d2 /var/lib/etcd

# Status files of the automatic run: /var/lib/kubectl-dr/restore/20261206T131234Z-10d2d2/status-restore on each node.
