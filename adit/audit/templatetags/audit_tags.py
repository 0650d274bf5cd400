"""`{% pseudonym_mapping_links job %}`: export links of a transfer job's pseudonym mapping,
shown only to users with `audit.export_pseudonym_mapping` (the export checks it again)."""

from django import template

register = template.Library()


@register.inclusion_tag("audit/partials/mapping_links.html", takes_context=True)
def pseudonym_mapping_links(context, job) -> dict:
    from adit.core.models import TransferJob

    request = context.get("request")
    user = getattr(request, "user", None)
    visible = (
        isinstance(job, TransferJob)
        and user is not None
        and user.has_perm("audit.export_pseudonym_mapping")
    )
    return {"visible": visible, "job_type": job._meta.app_label, "job_id": job.pk}
