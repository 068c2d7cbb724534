"""The "sites" test project: a second Feast repo + generated world, unlike the churn demo.

Two join keys (STRING ``site_id`` with odd values, INT64 ``device_id``), string features, an hourly
view with created-timestamp corrections and a 3-hour TTL, a slowly changing view without a created
column, label rows with naive ns timestamps and many ties, regression and multiclass targets.

    from tests.sites.project import new_sites_project, sites_spec
    root, spec = new_sites_project(tmp_path / "project", task="multiclass")
    from tests.sites import changes
    changes.edit_weather(root / "data", "Zürich HB", hour, temperature=30.0)
    changes.change_device_profile(root / "data", 101, row=1, firmware="v9.0")
    changes.append_late_events(root / "data", SitesConfig(), "st-1", month_index=1, n=20)
"""
