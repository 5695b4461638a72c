"""HorizontalPodAutoscalers (and KEDA, which works through them) that could undo a scale-down.

The HPA controller leaves a target alone while its spec.replicas is 0 and minReplicas is not 0 (it
sets the condition ScalingActive=False, reason ScalingDisabled; pkg/controller/podautoscaler), so an
ordinary HPA is no obstacle: it resumes once the replicas are back. Two set-ups do scale up from zero
and must block a scale-down: minReplicas 0 (the HPAScaleToZero feature), and a KEDA ScaledObject,
whose operator activates the target from zero itself when a trigger fires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubectl_dr.errors import ApiError
from kubectl_dr.kube.client import Kube
from kubectl_dr.workloads.specs import Json

HPA_PATH = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"


@dataclass
class Autoscalers:
    items: list[Json] = field(default_factory=list)
    # Why they could not be listed (RBAC, autoscaling/v2 not served); None when they were.
    unavailable: str | None = None

    def targeting(self, kind: str, name: str) -> list[Json]:
        return [
            hpa for hpa in self.items
            if ((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == kind
            and ((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name
        ]

    def verdict(self, kind: str, name: str) -> tuple[str | None, list[str]]:
        """(why it blocks a scale-down or None, notes to show) for one workload."""
        if self.unavailable is not None:
            return None, [f"could not check for HorizontalPodAutoscalers ({self.unavailable}); one with "
                          "minReplicas 0 would scale it back up"]
        blocking: list[str] = []
        notes: list[str] = []
        for hpa in self.targeting(kind, name):
            hpa_name = hpa["metadata"]["name"]
            min_replicas = int((hpa.get("spec") or {}).get("minReplicas", 1))
            keda = [r for r in hpa["metadata"].get("ownerReferences") or [] if r.get("kind") == "ScaledObject"]
            if keda:
                blocking.append(
                    f"KEDA ScaledObject {keda[0].get('name')} (through HorizontalPodAutoscaler {hpa_name}) scales it "
                    "up from zero when a trigger fires; pause it first: kubectl annotate scaledobject "
                    f"{keda[0].get('name')} autoscaling.keda.sh/paused=true")
            elif min_replicas == 0:
                blocking.append(
                    f"HorizontalPodAutoscaler {hpa_name} has minReplicas 0 and would scale it back up from zero; "
                    f"set its minReplicas to 1 or delete it for the duration")
            else:
                notes.append(f"HorizontalPodAutoscaler {hpa_name} pauses while replicas are 0 (ScalingDisabled) "
                             "and resumes when they are restored")
        return ("; ".join(blocking) or None), notes


def load_autoscalers(kube: Kube, namespace: str) -> Autoscalers:
    try:
        data = kube.get(HPA_PATH.format(namespace=namespace))
    except ApiError as exc:
        if exc.status in (403, 404):
            return Autoscalers(unavailable=exc.reason or str(exc.status))
        raise
    return Autoscalers(items=list(data.get("items") or []))
