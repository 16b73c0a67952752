from jobqueue import task


@task(queue="nightly reports")
def report():
    return None
