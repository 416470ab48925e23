"""Polling API: status, results, download, list, cancel. Each signed with X-Signature, each counted as polling."""
from __future__ import annotations

from flask import Response, jsonify, request, stream_with_context

from app.api import bp, runtime
from app.auth import current_client
from app.policies import Limit, Signature, policy
from services import jobs, results, webhooks
from services.clock import iso
from services.errors import ServiceError


def _job(job_id: str):
    return jobs.get_job(runtime().db, job_id, current_client().id)


@bp.get("/batch-status/<job_id>")
@policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
def batch_status(job_id: str):
    return jsonify(jobs.status_view(_job(job_id)))


def _not_ready(job) -> Response:
    body = {
        "error": "Job not completed",
        "status": job.status,
        "progress": {"completion_percentage": jobs.completion_percentage(job),
                     "estimated_completion": iso(job.estimated_completion),
                     "processed_lots": job.processed_lots, "failed_lots": job.failed_lots,
                     "total_lots": job.total_lots},
        "message": f"Job is currently {job.status}. Results will be available when status is 'completed'.",
        "code": "JOB_NOT_COMPLETED",
    }
    return jsonify(body), 202


def _ended_without_results(job) -> ServiceError:
    return ServiceError(409, f"JOB_{job.status.upper()}",
                        f"Job {job.status}: {job.error_message or 'no reason recorded'}. "
                        "Lots finished before that can be read from the download endpoint.",
                        {"processing_summary": results.summary(job)}, error=f"Job {job.status}",
                        extra={"status": job.status, "error_message": job.error_message})


def _results(job_id: str, download: bool) -> Response:
    """A finished job's results; a running job's progress (202). Only the download serves a job that
    ended without completing (its finished lots)."""
    job = _job(job_id)
    if job.is_active:
        return _not_ready(job)
    if not download and job.status != "completed":
        raise _ended_without_results(job)
    body = stream_with_context(results.iter_results_json(runtime().db, job))
    response = Response(body, mimetype="application/json")
    if download:
        response.headers["Content-Disposition"] = f'attachment; filename="batch_results_{job.id}.json"'
    return response


@bp.get("/batch-results/<job_id>")
@policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
def batch_results(job_id: str):
    return _results(job_id, download=False)


@bp.get("/batch-results/<job_id>/download")
@policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
def batch_results_download(job_id: str):
    return _results(job_id, download=True)


@bp.get("/batch-jobs")
@policy(signature=Signature.QUERY, limit=Limit.POLLING)
def batch_jobs():
    filters = jobs.parse_list_filters(request.args)
    return jsonify(jobs.list_jobs(runtime().db, **filters, client_id=current_client().id))


@bp.post("/batch-jobs/<job_id>/cancel")
@policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
def cancel(job_id: str):
    rt = runtime()
    answer = jobs.cancel_job(rt.db, job_id, on_final=webhooks.final_hook(rt.settings), client_id=current_client().id)
    rt.metrics.jobs.labels(status="cancelled").inc()
    if rt.worker is not None:
        rt.worker.wake()
    return jsonify(answer)
