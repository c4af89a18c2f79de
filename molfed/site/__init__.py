"""The partner's side of sites mode as a security boundary.

A site runs only molfed's own partner jobs, from the molfed installed at the site, for requests that a coordinator
key it trusts signed (:mod:`~molfed.site.requests`), within the policy it owns (:mod:`~molfed.site.policy`); every
decision goes to its append-only audit log (:mod:`~molfed.site.audit`). Nothing here imports Prefect or MLflow:
the agent that polls Prefect and the job runner live in ``flows/site_agent.py``.
"""
