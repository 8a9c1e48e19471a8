"""Plain Python that any layer may import, domain code included: no gRPC, no SQLAlchemy.

errors (the shop's exceptions) · money · clock · paging (page tokens) · validate (field checks)
· aio (tasks that never leak) · deadline (the call's deadline, inherited downstream).
"""
