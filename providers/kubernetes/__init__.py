from providers.kubernetes.provider import KubernetesProvider

__all__ = ["KubernetesProvider"]
