"""Ferryman: a live-migration orchestrator for KVM clouds."""

import warnings

# oslo.messaging imports oslo.service's eventlet backend, which warns on import even
# though Ferryman never uses eventlet (threading executor throughout).
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
