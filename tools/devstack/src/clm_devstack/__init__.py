"""clm_devstack: real local Kafka (KRaft) and PostgreSQL processes plus the CLM services.

Used by ``make run`` (``python -m clm_devstack up``) and ``make test``
(``python -m clm_devstack with-infra -- pytest ...``). Standard library only.
"""

from clm_devstack.errors import DevstackError

__all__ = ["DevstackError"]
