from jobqueue import task


@task
def pong():
    return "pong"
