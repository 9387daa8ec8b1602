"""The web console: pages over the store, live by server-sent events (``app.py``), with their
data (``data.py``), HTML (``pages.py``), changes (``actions.py``) and sign-in (``auth.py``)."""
