"""The queue feed service: FastAPI (REST + server-sent events) and the officers' web page.

>>> from riskengine.service import Settings, create_app
>>> app = create_app(Settings(db_url="sqlite:///riskengine.db"))    # doctest: +SKIP

Run it with ``riskengine serve``.
"""

from riskengine.service.main import create_app
from riskengine.service.settings import QueueSettings, Settings

__all__ = ["QueueSettings", "Settings", "create_app"]
