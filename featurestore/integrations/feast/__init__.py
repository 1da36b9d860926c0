"""Import a Feast repo: ``import_feast_repo(path, out)`` writes a featurestore repo.

- ``load.py``: reads the repo with the real ``feast`` package (imported lazily);
- ``convert.py``: Feast objects -> our definitions as Python source, object by object;
- ``code.py``: formats that source (stable under ``ruff format``);
- ``report.py``: what was converted, with which semantic difference, or not.

The Feast-compatible HTTP route lives in ``server/feast_compat.py`` and needs no Feast.
"""

from featurestore.integrations.feast.convert import import_feast_repo
from featurestore.integrations.feast.report import Difference, ImportReport, ReportItem

__all__ = ["Difference", "ImportReport", "ReportItem", "import_feast_repo"]
