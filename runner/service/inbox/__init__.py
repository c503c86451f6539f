"""The review inbox: `runner serve`'s pages for the people who decide escalated runs
(the routes and how a request is served: runner.service.inbox.app)."""
