"""One module per tab, named after its key in ``pipelines.PIPELINES``; each has ``PIPELINE`` and ``build()``.

To add a tab: write ``tabs/<method>.py`` (copy nerf.py) and add its module to the line below. A pipeline
without a tab gets a placeholder that points to the CLI.
"""
from . import dreamfields, dreamfusion, magic3d, nerf, pointe, single_view, volsdf

TABS = {tab.PIPELINE: tab for tab in (nerf, volsdf, single_view, dreamfusion, dreamfields, magic3d, pointe)}
