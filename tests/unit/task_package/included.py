from jobqueue import task


@task
def ping():
    return "ping"
